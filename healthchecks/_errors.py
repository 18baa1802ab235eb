"""Errors of the health-check package."""

import config

__all__ = ["HealthCheckConfigError", "HealthCheckError", "SchedulerStateError"]


class HealthCheckError(config.XdplbError):
    """Base class of health-check errors."""


class HealthCheckConfigError(HealthCheckError, ValueError):
    """A check's parameters pass the config schema but cannot be used (a header with a line break)."""


class SchedulerStateError(HealthCheckError, RuntimeError):
    """A scheduler call made in the wrong order (``update`` after ``stop``, ``start`` twice)."""
