"""What the scheduler knows about a backend: its target spec, health state, results and changes."""

import dataclasses
import enum

import config

__all__ = [
    "AdminState",
    "BackendHealth",
    "CheckHealth",
    "CheckResult",
    "CheckRun",
    "HealthChange",
    "HealthState",
    "Target",
    "ViaDataPlane",
]


class HealthState(enum.Enum):
    """What the checks say: not known yet (no result), passing (up) or failing (down)."""

    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


AdminState = config.AdminState
"""What the operator says, on top of health: the config's own enum (``DRAINED`` keeps checking, ``DISABLED``
pauses the checks and reads ``UNKNOWN``)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ViaDataPlane:
    """How a target's checks with ``via: dataplane`` reach it: from sockets marked ``mark``, which the data plane
    delivers to ``vip`` by the backend's own forwarding (``bpf.check_path``)."""

    mark: int
    vip: config.IpAddress


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """One backend to check, as the core wants it.

    ``key`` is the core's unique id for it; ``port`` is the service port, probed by every check that names no
    port of its own. All checks must pass for the backend to be up; with no checks it is always up (as HAProxy's
    servers without ``check``).

    >>> import ipaddress, config
    >>> Target(key="web-1", address=ipaddress.ip_address("127.0.0.1"), port=8080, checks=(config.TcpCheck(),))
    ... # doctest: +ELLIPSIS
    Target(key='web-1', ...)
    """

    key: str
    address: config.IpAddress
    port: int
    checks: tuple[config.Check, ...]
    admin: AdminState = AdminState.ENABLED
    via: ViaDataPlane | None = None  # for its checks with ``via: dataplane``; HealthCheckConfigError without

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"target {self.key}: port {self.port} out of range 1-65535")


@dataclasses.dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict of one check run: ``reason`` says why in a few words (``"status 503, expected 200-299"``).

    ``duration`` is in seconds (connect to verdict); ``at`` is the wall-clock time (epoch seconds) it finished.
    """

    ok: bool
    reason: str
    duration: float
    at: float


@dataclasses.dataclass(frozen=True, slots=True)
class CheckRun:
    """One finished check run, handed to the scheduler's ``on_check`` hook (metrics, benchmarks, tests).

    ``lag`` is how late the run started after it was due, in seconds.
    """

    key: str
    check: int
    result: CheckResult
    lag: float


@dataclasses.dataclass(frozen=True, slots=True)
class CheckHealth:
    """The state of one check of a backend, with its own rise/fall counting."""

    check: config.Check
    state: HealthState
    last_result: CheckResult | None


@dataclasses.dataclass(frozen=True, slots=True)
class BackendHealth:
    """A snapshot of one backend: health ``state`` since ``since`` (wall clock) and why (``reason``).

    ``last_result`` is the most recent result of any of its checks; ``checks`` has each check's own state.
    """

    state: HealthState
    since: float
    reason: str
    last_result: CheckResult | None
    admin: AdminState
    checks: tuple[CheckHealth, ...] = ()

    @property
    def weight_factor(self) -> float | None:
        """What to multiply the configured weight by: ``None`` to remove the backend, 0.0 to keep it without
        new traffic (drained), 1.0 for full traffic. Only an up backend that is not disabled is kept."""
        if self.admin is AdminState.DISABLED or self.state is not HealthState.UP:
            return None
        return 0.0 if self.admin is AdminState.DRAINED else 1.0

    @property
    def receives_new_traffic(self) -> bool:
        """Whether new flows may go to this backend (up and enabled)."""
        return self.weight_factor == 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class HealthChange:
    """A change of a backend's health or admin state, delivered in order.

    ``old`` and ``new`` are health states (equal when only ``admin`` changed). A target removed by
    ``Scheduler.update`` gets a last change to ``UNKNOWN`` with reason ``"removed"``.
    """

    key: str
    old: HealthState
    new: HealthState
    reason: str
    at: float
    admin: AdminState
