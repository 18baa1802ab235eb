"""Route health injection: the ExaBGP driver."""

__all__: list[str] = []
