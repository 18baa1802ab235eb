"""Health checkers (HTTP, HTTPS, TCP, DNS) and their scheduler.

The core describes each backend as a ``Target`` (checks from ``config``), hands the whole set to
``Scheduler.update``, and follows ``Scheduler.events()`` (or ``states()``). ``probe`` runs one check once.
"""

from healthchecks._checker import HttpEngine
from healthchecks._clock import Clock, LoopClock, ManualClock
from healthchecks._errors import HealthCheckConfigError, HealthCheckError, SchedulerStateError
from healthchecks._events import EventStream
from healthchecks._health import (
    AdminState,
    BackendHealth,
    CheckHealth,
    CheckResult,
    CheckRun,
    HealthChange,
    HealthState,
    Target,
)
from healthchecks._probe import probe
from healthchecks._scheduler import Scheduler

__all__ = [
    "AdminState",
    "BackendHealth",
    "CheckHealth",
    "CheckResult",
    "CheckRun",
    "Clock",
    "EventStream",
    "HealthChange",
    "HealthCheckConfigError",
    "HealthCheckError",
    "HealthState",
    "HttpEngine",
    "LoopClock",
    "ManualClock",
    "Scheduler",
    "SchedulerStateError",
    "Target",
    "probe",
]
