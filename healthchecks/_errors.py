"""Errors of the health-check package."""

import config

__all__ = ["HealthCheckConfigError", "HealthCheckError", "SchedulerStateError"]


class HealthCheckError(config.XdplbError):
    """Base class of health-check errors."""


class HealthCheckConfigError(HealthCheckError, ValueError):
    """A check's parameters pass the config schema but cannot be used (a path that is not Latin-1, a missing CA file).

    ``field`` names the check's field at fault (``"path"``, ``"ca_file"``), None when it is the check as a whole.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (str(self), self.field))


def _rebuild(message: str, field: str | None) -> HealthCheckConfigError:
    return HealthCheckConfigError(message, field=field)


class SchedulerStateError(HealthCheckError, RuntimeError):
    """A scheduler call made in the wrong order (``update`` after ``stop``, ``start`` twice)."""
