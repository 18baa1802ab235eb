"""One check's state machine: rise/fall counting and the interval to wait before the next run (no I/O).

From ``UNKNOWN`` the first result decides (as keepalived's ``alpha`` mode: one pass makes a new backend usable).
From ``UP``, ``fall`` failures in a row bring it down; from ``DOWN``, ``rise`` passes in a row bring it up.
While results disagree with the state the check runs every ``fast_interval`` (HAProxy's ``fastinter``); while
steadily down, every ``down_interval``; otherwise every ``interval``.
"""

import config
from healthchecks import _health

__all__ = ["RiseFall"]

_UNKNOWN, _UP, _DOWN = _health.HealthState.UNKNOWN, _health.HealthState.UP, _health.HealthState.DOWN


class RiseFall:
    """Counts results against ``timing``; ``feed`` says whether the state changed.

    >>> import config
    >>> machine = RiseFall(config.CheckTiming(rise=2, fall=2, interval=10, fast_interval=1))
    >>> machine.feed(True), machine.state.value, machine.next_interval()
    (True, 'up', 10.0)
    >>> machine.feed(False), machine.state.value, machine.next_interval()
    (False, 'up', 1.0)
    >>> machine.feed(False), machine.state.value
    (True, 'down')
    """

    __slots__ = ("state", "streak", "_timing")

    def __init__(self, timing: config.CheckTiming, state: _health.HealthState = _UNKNOWN) -> None:
        self._timing = timing
        self.state = state
        self.streak = 0  # results in a row that disagree with the state

    def feed(self, ok: bool) -> bool:
        """Count one result; True if it changed the state."""
        state = self.state
        if state is _UNKNOWN:
            self.state = _UP if ok else _DOWN
            return True
        if ok == (state is _UP):
            self.streak = 0
            return False
        self.streak += 1
        if self.streak >= (self._timing.fall if state is _UP else self._timing.rise):
            self.state = _DOWN if state is _UP else _UP
            self.streak = 0
            return True
        return False

    def next_interval(self) -> float:
        """Seconds from this run's start to the next one."""
        timing = self._timing
        if self.state is _UNKNOWN or self.streak:
            return timing.fast_interval or timing.interval
        if self.state is _DOWN:
            return timing.down_interval or timing.interval
        return timing.interval
