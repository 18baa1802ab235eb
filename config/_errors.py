"""The root of xdplb's exception hierarchy.

It lives in ``config``, the lowest layer, so that every package can derive its own errors from it.
"""

__all__ = ["XdplbError"]


class XdplbError(Exception):
    """Base class of every error xdplb raises on purpose."""
