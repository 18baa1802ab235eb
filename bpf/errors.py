"""Errors of the data plane."""

from config import XdplbError

__all__ = ["DataPlaneError"]


class DataPlaneError(XdplbError, OSError):
    """A map, load or attach operation failed, or a service cannot be programmed."""
