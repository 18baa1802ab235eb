"""One snapshot per interval for every reader (``/api/v1/status``, the console, ``/metrics``), and each rendering
of it made once, in a worker thread.

At 10,000 backends a snapshot costs about 0.3 s, its status JSON 0.7 s and its exposition seconds; built per
request, a console and a scraper together kept the event loop busy. Through a ``SnapshotCache`` the controller
builds at most one snapshot per ``interval`` (default 1 s), and a rendering of it (JSON, text exposition) is made
at most once per snapshot, however many requests ask::

    cache = snapshot_cache.SnapshotCache(controller, interval=1.0)
    taken = await cache.get()                       # the snapshot, and when it was taken
    body = await taken.rendered("status", lambda: functools.partial(encode, taken.snapshot))
    cache.invalidate()                              # after an admin call or a reload: the next get() builds

**Where each step runs.** ``Controller.snapshot_builder()`` reads the core's state on the event loop (copies of
the mappings and one batch read per counter map: milliseconds at 10,000 backends), since only the loop changes
it and a thread would read it half-changed; the function it returns assembles the snapshot from those reads in a
worker thread (the per-backend reports: about 0.3 s at 10,000 backends, which on the loop stalled it that long).
Requests that arrive while one is built wait for that one: one build per interval. The renderings only read the
snapshot, which is immutable, so they run in worker threads too (``asyncio.to_thread``).
"""

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from balancer import status

__all__ = ["Render", "SnapshotCache", "Taken"]

log = logging.getLogger(__name__)

Render = Callable[[], Callable[[], bytes]]
"""Called on the loop to take what the rendering needs; what it returns is called in a worker thread."""
_T = TypeVar("_T")


@dataclasses.dataclass(eq=False)
class Taken:
    """A snapshot, when it was taken (``at``, epoch seconds) and the renderings made of it so far."""

    snapshot: status.Snapshot
    at: float
    monotonic: float
    generation: int = 0
    _renders: dict[str, "asyncio.Future[Any]"] = dataclasses.field(default_factory=dict, repr=False)

    async def rendered(self, key: str, prepare: Callable[[], Callable[[], _T]]) -> _T:
        """The rendering named ``key`` of this snapshot (bytes, or anything derived from it once, such as an
        index): made once, by ``prepare()`` on the loop and what it returns in a worker thread. Concurrent callers
        share the one rendering; a failed one is tried again next time."""
        future = self._renders.get(key)
        if future is None:
            future = asyncio.ensure_future(asyncio.to_thread(prepare()))
            self._renders[key] = future
            future.add_done_callback(lambda done: self._forget_failed(key, done))
        return await asyncio.shield(future)  # a client that goes away does not cancel the others' rendering

    def _forget_failed(self, key: str, done: "asyncio.Future[Any]") -> None:
        if done.cancelled() or done.exception() is not None:
            if self._renders.get(key) is done:
                del self._renders[key]


class SnapshotCache:
    """``controller.snapshot()`` at most once per ``interval`` seconds; ``interval=0`` builds on every ``get()``."""

    def __init__(
        self,
        controller: status.Controller,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._controller = controller
        self.interval = interval
        self._clock = clock
        self._wall = wall
        self._taken: Taken | None = None
        self._building: asyncio.Future[Taken] | None = None
        self._generation = 0  # bumped by invalidate(): a build started before it is not good enough after it
        self.builds = 0

    async def get(self) -> Taken:
        """The snapshot of the last ``interval`` seconds, built now if there is none; raises what building raised.

        Concurrent callers share one build; one started before the last ``invalidate()`` is not used after it.
        """
        while True:
            taken = self._taken
            if taken is not None and self._clock() - taken.monotonic < self.interval:
                return taken
            building = self._building
            if building is None:
                building = self._building = asyncio.ensure_future(self._build(self._generation))
            generation = self._generation
            taken = await asyncio.shield(building)  # a client that goes away does not cancel the others' build
            if taken.generation == generation or self.interval == 0:
                return taken

    async def _build(self, generation: int) -> Taken:
        try:
            start = self._clock()
            assemble = self._controller.snapshot_builder()  # on the loop: the reads
            snapshot = await asyncio.to_thread(assemble)  # elsewhere: the assembly
            now = self._clock()
            taken = Taken(snapshot, at=self._wall(), monotonic=now, generation=generation)
            if generation == self._generation:
                self._taken = taken
            self.builds += 1
            if now - start > 0.1:
                log.debug("event=snapshot_built seconds=%.3f", now - start)
            return taken
        finally:
            self._building = None

    def invalidate(self) -> None:
        """Forget the snapshot: the next ``get()`` builds one (after an admin call or a reload changed the state)."""
        self._taken = None
        self._generation += 1
