"""Delivering health changes to the core: every subscriber gets every change, in order, none dropped."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

from healthchecks import _health

__all__ = ["EventHub", "EventStream"]

log = logging.getLogger(__name__)


class EventStream:
    """An async iterator of changes since it was created; it ends after the scheduler stops and it is drained.

    Its queue is unbounded on purpose: a change is never dropped, so a consumer that stops reading should
    ``close()`` the stream. A consumer reading a backlog (thousands of first verdicts at once) gets through it in
    slices of ``SLICE`` seconds with the loop's other work between them: a queue with items never suspends by
    itself, and would hold the loop until the backlog was read.
    """

    SLICE = 0.01

    def __init__(self, hub: "EventHub") -> None:
        self._hub = hub
        self._queue: asyncio.Queue[_health.HealthChange | None] = asyncio.Queue()
        self._ended = False
        self._slice_ends = 0.0

    def __aiter__(self) -> AsyncIterator[_health.HealthChange]:
        return self

    async def __anext__(self) -> _health.HealthChange:
        if self._ended:
            raise StopAsyncIteration
        # time.monotonic, not loop.time(): uvloop's clock stands still within one turn of the loop.
        if time.monotonic() > self._slice_ends:
            if not self._queue.empty():
                await asyncio.sleep(0)  # a backlog: the loop's turn between slices
            self._slice_ends = time.monotonic() + self.SLICE
        change = await self._queue.get()
        if change is None:
            self._ended = True
            raise StopAsyncIteration
        return change

    def pending(self) -> int:
        """Changes delivered but not read yet."""
        return self._queue.qsize()

    def close(self) -> None:
        """Stop receiving changes; what is queued can still be read."""
        self._hub.unsubscribe(self)
        self._queue.put_nowait(None)

    def put(self, change: _health.HealthChange | None) -> None:
        self._queue.put_nowait(change)


class EventHub:
    """Fans each change out to the streams and callbacks subscribed when it happens."""

    def __init__(self) -> None:
        self._streams: list[EventStream] = []
        self._callbacks: list[Callable[[_health.HealthChange], None]] = []
        self._closed = False

    def stream(self) -> EventStream:
        stream = EventStream(self)
        if self._closed:
            stream.put(None)
        else:
            self._streams.append(stream)
        return stream

    def subscribe(self, callback: Callable[[_health.HealthChange], None]) -> Callable[[], None]:
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    def unsubscribe(self, stream: EventStream) -> None:
        if stream in self._streams:
            self._streams.remove(stream)

    def publish(self, change: _health.HealthChange) -> None:
        for stream in self._streams:
            stream.put(change)
        for callback in list(self._callbacks):
            try:
                callback(change)
            except Exception:
                log.exception("event=health_callback_failed backend=%s callback=%r", change.key, callback)

    def close(self) -> None:
        """End every stream (after what is queued) and drop every callback."""
        self._closed = True
        for stream in self._streams:
            stream.put(None)
        self._streams.clear()
        self._callbacks.clear()
