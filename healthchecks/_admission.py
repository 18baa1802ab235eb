"""How many checks a checking process has in flight at once: a bound, so that slow answers slow the checks down.

When answers come slowly (the servers or the machine are overloaded), an unbounded checker keeps starting checks
on schedule, so more and more are in flight, all of them time out, and the load that slowed the answers grows:
every backend goes down at once. With a bound, a check waits for room instead (first come, first served), the
rate of new checks falls as answers slow down, and the scheduling lag shows the wait. Checks of backends that do
not answer at all hold their room until their timeout: ``MAX_IN_FLIGHT`` per process covers 512 of them at a
1 s timeout every 2 s before other checks start to wait.
"""

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable

__all__ = ["Admission", "MAX_IN_FLIGHT"]

MAX_IN_FLIGHT = 256

Admitted = Callable[[], bool]
"""Starts a check that was let in; returns False when it started nothing (its target stopped while it waited),
so that its room goes to the next one."""


class Admission:
    """At most ``limit`` checks in flight; the others wait in order for one to end."""

    def __init__(self, limit: int = MAX_IN_FLIGHT) -> None:
        if limit < 1:
            raise ValueError("the limit of checks in flight must be at least 1")
        self.limit = limit
        self.in_flight = 0
        self.waited_total = 0  # checks that had to wait for room, since start
        self._waiting: collections.deque[Admitted] = collections.deque()
        self._handing = False

    @property
    def waiting(self) -> int:
        """Checks waiting for room now (those whose target stopped meanwhile included until their turn)."""
        return len(self._waiting)

    def admit(self, start: Admitted) -> None:
        """Call ``start`` now if there is room, else once there is; the caller ``release()``s when the check ends."""
        if self.in_flight < self.limit and not self._waiting:
            self.in_flight += 1
            if not start():
                self.in_flight -= 1
            return
        self.waited_total += 1
        self._waiting.append(start)

    def release(self) -> None:
        """A check let in has ended: its room goes to the next waiting one."""
        self.in_flight -= 1
        if self._handing:
            return  # the loop below, further up the stack, hands the room on: no recursion through callbacks
        self._handing = True
        try:
            while self._waiting and self.in_flight < self.limit:
                start = self._waiting.popleft()
                self.in_flight += 1
                if not start():
                    self.in_flight -= 1
        finally:
            self._handing = False

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """For a check run by a task: wait for room, hold it for the block."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def start() -> bool:
            if future.done():  # cancelled while it waited
                return False
            future.set_result(None)
            return True

        self.admit(start)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # let in, and cancelled before it could run
            raise
        try:
            yield
        finally:
            self.release()
