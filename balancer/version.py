"""The installed version of xdplb, for ``--version``, the status API and ``xdplb_build_info``."""

from importlib import metadata

__all__ = ["installed_version"]


def installed_version() -> str:
    """The distribution's version, or ``unknown`` when running from a tree that is not installed."""
    try:
        return metadata.version("xdplb")
    except metadata.PackageNotFoundError:
        return "unknown"
