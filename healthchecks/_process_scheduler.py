"""Checks in worker processes: the targets are split over N checker processes, so checking grows with cores.

The core's process keeps only what it needs to route messages: each target's shard and last known state.
"""

import asyncio
import logging
import socket
import subprocess
import sys
import types
import zlib
from collections.abc import Callable, Iterable
from typing import Self

from healthchecks import _checker, _errors, _events, _frames, _health, _scheduler

__all__ = ["ProcessScheduler"]

log = logging.getLogger(__name__)

_WORKER_MODULE = "healthchecks._worker"  # not imported here: runpy warns when -m runs a module already imported
_STOP_GRACE = 12.0  # a checker's own stop waits up to 10 s for its checks to end
_SILENCE = 15.0  # a checker that sent nothing for this long (it sends every second) is killed and restarted
_FIRST_BACKOFF, _MAX_BACKOFF = 0.5, 30.0


class _Shard:
    """One checker process: its targets, and its connection while it runs."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.targets: dict[str, _health.Target] = {}
        self.writer: asyncio.StreamWriter | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.heard = 0.0  # loop time of its last message

    def send(self, message: object) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(_frames.encode(message))


class ProcessScheduler:
    """``Scheduler``'s interface, with the checks run by ``workers`` child processes.

    A target always goes to the same process (a hash of its key). A process that dies or falls silent is
    restarted with back-off and logged; its targets start again from the states they had, so a crash of a
    checker neither takes a backend out nor lets one in. ``restarts`` counts those restarts. Changes arrive
    in order per target; ``on_check`` sees every run, delivered in batches (within 20 ms).
    """

    def __init__(
        self,
        *,
        workers: int,
        http_engine: _checker.HttpEngine = "lean",
        on_check: Callable[[_health.CheckRun], None] | None = None,
        log_level: str | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self._http_engine: _checker.HttpEngine = http_engine
        self._on_check = on_check
        self._log_level = log_level or logging.getLevelName(logging.getLogger().getEffectiveLevel())
        self._shards = [_Shard(index) for index in range(workers)]
        self._states: dict[str, _health.HealthState] = {}
        self._hub = _events.EventHub()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._stopping = False
        self.restarts = 0

    @property
    def workers(self) -> int:
        """How many checker processes there are."""
        return len(self._shards)

    def worker_pids(self) -> list[int]:
        """The process ids of the checkers running now (for diagnostics and tests)."""
        return [s.process.pid for s in self._shards if s.process is not None and s.process.returncode is None]

    # lifecycle

    def start(self) -> None:
        """Start the checker processes (inside a running event loop); each gets its shard once it is up."""
        if self._stopping:
            raise _errors.SchedulerStateError("the scheduler was stopped; make a new one")
        if self._started:
            raise _errors.SchedulerStateError("the scheduler is already started")
        loop = asyncio.get_running_loop()
        self._started = True
        for shard in self._shards:
            self._tasks.append(loop.create_task(self._supervise(shard), name=f"healthcheck worker {shard.index}"))
        log.info("event=healthchecks_started targets=%d workers=%d engine=%s",
                 len(self._states), len(self._shards), self._http_engine)  # fmt: skip

    async def stop(self) -> None:
        """Stop every checker process (each closes its connections) and end the event streams."""
        if self._stopping:
            return
        self._stopping = True
        for shard in self._shards:
            shard.send(("stop",))
        if self._tasks:
            _, hung = await asyncio.wait(self._tasks, timeout=_STOP_GRACE)
            for task in hung:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for shard in self._shards:
            if shard.process is not None and shard.process.returncode is None:
                log.error("event=healthcheck_worker_stop_hung worker=%d grace=%gs", shard.index, _STOP_GRACE)
                shard.process.kill()
                await shard.process.wait()
        self._hub.close()
        log.info("event=healthchecks_stopped targets=%d workers=%d", len(self._states), len(self._shards))

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: types.TracebackType | None
    ) -> None:
        await self.stop()

    # the wanted set

    def update(self, targets: Iterable[_health.Target]) -> None:
        """Make the checked set equal to ``targets``; each process is sent only what changed in its shard."""
        wanted = _scheduler.unique_targets(targets)
        self._apply(wanted, [key for shard in self._shards for key in shard.targets if key not in wanted])

    def change(self, put: Iterable[_health.Target], remove: Iterable[str] = ()) -> None:
        """Add or replace the targets ``put`` and stop checking the keys ``remove``, leaving the rest alone: work in
        proportion to the change, where ``update`` compares the whole set. A key in both is put."""
        wanted = _scheduler.unique_targets(put)
        self._apply(wanted, [key for key in remove if key not in wanted])

    def _apply(self, wanted: dict[str, _health.Target], removed: Iterable[str]) -> None:
        if self._stopping:
            raise _errors.SchedulerStateError("update() after stop()")
        _scheduler.verify_targets(wanted.values(), self._running_target, self._http_engine)
        workers = len(self._shards)
        puts: list[list[_health.Target]] = [[] for _ in self._shards]
        removes: list[list[str]] = [[] for _ in self._shards]
        for key, target in wanted.items():
            index = _shard_of(key, workers)
            if self._shards[index].targets.get(key) != target:
                puts[index].append(target)
        for key in removed:
            shard = self._shards[_shard_of(key, workers)]
            if shard.targets.pop(key, None) is not None:
                removes[shard.index].append(key)
                self._states.pop(key, None)
        for shard, put, gone in zip(self._shards, puts, removes, strict=True):
            for target in put:
                shard.targets[target.key] = target
                self._states.setdefault(target.key, _health.HealthState.UNKNOWN)
            if put or gone:
                shard.send(("update", put, gone, {}))

    def _running_target(self, key: str) -> _health.Target | None:
        return self._shards[_shard_of(key, len(self._shards))].targets.get(key)

    # what the core reads

    def events(self) -> _events.EventStream:
        """An async iterator of every change from now on; it ends when the scheduler stops."""
        return self._hub.stream()

    def subscribe(self, callback: Callable[[_health.HealthChange], None]) -> Callable[[], None]:
        """Call ``callback`` with every change from now on; returns a function that unsubscribes."""
        return self._hub.subscribe(callback)

    # the processes

    async def _supervise(self, shard: _Shard) -> None:
        loop = asyncio.get_running_loop()
        backoff = _FIRST_BACKOFF
        while True:
            began = loop.time()
            try:
                await self._run_once(shard)
            except Exception:
                log.exception("event=healthcheck_worker_failed worker=%d", shard.index)
            if self._stopping:
                break
            self.restarts += 1
            code = shard.process.returncode if shard.process is not None else None
            if loop.time() - began > 60.0:
                backoff = _FIRST_BACKOFF
            log.error("event=healthcheck_worker_restarting worker=%d exit=%s targets=%d in=%.1fs",
                      shard.index, code, len(shard.targets), backoff)  # fmt: skip
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _run_once(self, shard: _Shard) -> None:
        ours, theirs = socket.socketpair()
        try:
            shard.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", _WORKER_MODULE, str(theirs.fileno()), self._http_engine, self._log_level,
                str(shard.index), pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            theirs.close()
        process = shard.process
        reader, writer = await asyncio.open_connection(sock=ours)
        shard.writer = writer
        if self._stopping:  # stop() came while this process was starting
            shard.send(("stop",))
        shard.heard = asyncio.get_running_loop().time()
        known = {key: self._states[key] for key in shard.targets if self._states.get(key, _UNKNOWN) is not _UNKNOWN}
        shard.send(("update", list(shard.targets.values()), [], known))
        watchdog = asyncio.get_running_loop().create_task(self._watch(shard), name=f"watchdog {shard.index}")
        try:
            while (message := await _frames.read(reader)) is not None:
                shard.heard = asyncio.get_running_loop().time()
                self._receive(message)
        finally:
            watchdog.cancel()
            shard.writer = None
            writer.close()
            if process.returncode is None and not self._stopping:
                process.kill()
            await process.wait()

    async def _watch(self, shard: _Shard) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_SILENCE / 3)
            if loop.time() - shard.heard > _SILENCE and shard.process is not None:
                log.error("event=healthcheck_worker_silent worker=%d seconds=%.0f", shard.index, _SILENCE)
                shard.process.kill()
                return

    def _receive(self, message: tuple[str, list[_health.HealthChange], list[_frames.RunRecord]]) -> None:
        _, changes, runs = message
        for change in changes:
            if change.key in self._states:
                self._states[change.key] = change.new
            self._hub.publish(change)
        on_check = self._on_check
        if on_check is None:
            return
        for key, check, ok, reason, duration, at, lag in runs:
            try:
                on_check(_health.CheckRun(key, check, _health.CheckResult(ok, reason, duration, at), lag))
            except Exception:
                log.exception("event=on_check_failed backend=%s", key)


_UNKNOWN = _health.HealthState.UNKNOWN


def _shard_of(key: str, workers: int) -> int:
    return zlib.crc32(key.encode()) % workers
