"""Typed configuration model of xdplb, its loading and validation."""

from config._errors import XdplbError

__all__ = ["XdplbError"]
