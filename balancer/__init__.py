"""The asyncio core of xdplb: reconciliation, CLI, HTTP API, console and metrics."""

__all__: list[str] = []
