"""The asyncio core of xdplb: reconciliation, CLI, HTTP API, console and metrics (and the namespace lab, ``lab``)."""

__all__: list[str] = []
