"""Health checkers (HTTP, HTTPS, TCP, DNS) and their scheduler."""

__all__: list[str] = []
