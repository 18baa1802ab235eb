"""Health checkers (HTTP, HTTPS, TCP, DNS) and their scheduler.

The core describes each backend as a ``Target`` (checks from ``config``), hands the whole set to
``Scheduler.update``, and follows ``Scheduler.events()`` (or ``subscribe``, or ``states()``). ``ProcessScheduler``
has the same interface with the checks run in N child processes (targets sharded by key; a checker that dies is
restarted and its targets keep their states); the daemon uses it. ``probe`` runs one check once (for a CLI or API
"check now"). ``verify_check`` says whether a check can be sent at all
(``HealthCheckConfigError`` with the ``field`` at fault), as ``Scheduler.update`` would, without sending it.

Semantics, in short:

- Each check of a target runs in its own task on its own timer, with its own rise/fall count; the backend is
  ``UP`` when every check is up, ``DOWN`` when any is down (its reason names that check), ``UNKNOWN`` before.
  From ``UNKNOWN`` the first result decides; after that ``rise``/``fall`` results in a row flip the state.
- Intervals: ``fast_interval`` while results disagree with the state (and while unknown), ``down_interval`` while
  steadily down, else ``interval``; the first run is offset by up to ``jitter`` x interval.
- ``AdminState.DRAINED`` keeps checking and reports ``weight_factor == 0.0``; ``DISABLED`` pauses the checks and
  reads ``UNKNOWN``. ``BackendHealth.weight_factor`` is ``None`` (remove), ``0.0`` (keep, no new flows) or ``1.0``.
- A check never raises and never outlives its timeout: whatever the backend does ends as ``ok=False`` with a
  short reason (``"timeout after 1s waiting for the response"``, ``"connection refused"``,
  ``"TLS error: certificate has expired"``, ``"status 503, expected 200-299"``, ``"body mismatch: ..."``).
- HTTP checks run on a lean HTTP/1.1 client by default (``http_engine="lean"``), or on aiohttp's client
  (``"aiohttp"``, about three times the CPU per check in ``make bench-healthchecks``); both pass the same tests. Plain HTTP
  without keep-alive, the common case, runs on bare sockets in one epoll per loop, started from the clock's
  timers (sleepers wake together on 10 ms ticks) with a callback: no task, future or asyncio timeout per check.
  HTTPS and keep-alive run on an asyncio protocol in a task. Connections are closed with a reset, so checks leave
  no TIME_WAIT sockets behind. Works on the default event loop and on uvloop.
- Under overload the checks run late, never falsely: a checking process has at most 256 checks in flight (the rest
  wait their turn, ``_admission``), and a clock tick that wakes 50 ms late holds its checks until the loop has
  caught up (at most 5 s, ``LoopClock``). The scheduling lag (``CheckRun.lag``) shows the wait.
"""

from healthchecks._checker import HttpEngine, verify_check
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
    ViaDataPlane,
)
from healthchecks._probe import probe
from healthchecks._process_scheduler import ProcessScheduler
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
    "ProcessScheduler",
    "Scheduler",
    "SchedulerStateError",
    "Target",
    "ViaDataPlane",
    "probe",
    "verify_check",
]
