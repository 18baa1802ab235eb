"""A checker process: ``python -m healthchecks._worker FD ENGINE LEVEL INDEX``, started by ``ProcessScheduler``.

It runs a ``Scheduler`` over its shard of the targets and sends the changes and check runs back in batches on
the socket inherited as FD. It ends when the core says ``stop`` or closes the socket (the core is gone), and
ignores SIGINT, SIGTERM and SIGHUP: a stop of the whole service group reaches the core, which stops the checks in
order (withdraw first, then stop checking), and a checker that left first would be seen as a crash.
"""

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence

import config
from healthchecks import _checker, _frames, _health, _scheduler

__all__ = ["main"]

log = logging.getLogger(__name__)

_BATCH_DELAY = 0.02  # the longest a change waits to be sent, so that runs go out many to a message
_HEARTBEAT = 1.0  # an empty batch at least this often: the core counts a silent checker as hung
# Checkers yield the CPU to the core when the machine is short of it: reloads, BGP and the data plane stay
# prompt, and the checks, paced, run late rather than wrong.
NICE = 5


class _Outbox:
    """Collects changes and check runs, and sends them as one ``("batch", changes, runs)`` message."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._changes: list[_health.HealthChange] = []
        self._runs: list[_frames.RunRecord] = []
        self._pending: asyncio.TimerHandle | None = None

    def add_change(self, change: _health.HealthChange) -> None:
        self._changes.append(change)
        self._schedule()

    def add_run(self, run: _health.CheckRun) -> None:
        result = run.result
        self._runs.append((run.key, run.check, result.ok, result.reason, result.duration, result.at, run.lag))
        self._schedule()

    def _schedule(self) -> None:
        if self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(_BATCH_DELAY, self.flush)

    def flush(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if self._writer.is_closing():
            return
        self._writer.write(_frames.encode(("batch", self._changes, self._runs)))
        self._changes, self._runs = [], []

    async def heartbeat(self) -> None:
        while True:
            await asyncio.sleep(_HEARTBEAT)
            self.flush()


async def _serve(sock: socket.socket, engine: _checker.HttpEngine) -> None:
    reader, writer = await asyncio.open_connection(sock=sock)
    outbox = _Outbox(writer)
    scheduler = _scheduler.Scheduler(http_engine=engine, on_check=outbox.add_run)
    scheduler.subscribe(outbox.add_change)
    targets: dict[str, _health.Target] = {}
    scheduler.start()
    heartbeat = asyncio.create_task(outbox.heartbeat(), name="heartbeat")
    gc.freeze()  # the modules and the loop live as long as the process: keep full collections short
    try:
        while (message := await _frames.read(reader)) is not None:
            if message[0] == "stop":
                break
            _, puts, removes, initial = message
            for key in removes:
                targets.pop(key, None)
            targets.update((target.key, target) for target in puts)
            try:
                scheduler.update(targets.values(), initial=initial)
            except Exception:  # the core verified these checks; keep checking the rest whatever happens
                log.exception("event=healthcheck_worker_update_failed targets=%d", len(targets))
            # The targets live until the next update: out of the collector's reach too (a full collection walked
            # 5,000 of them in 40-85 ms, a stall of every check due meanwhile). What a later update drops is
            # freed by reference counts: a removed backend lets go of its lanes (``Backend.discard``).
            gc.freeze()
    finally:
        heartbeat.cancel()
        await scheduler.stop()
        outbox.flush()
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the core on the inherited socket until it says stop or goes away."""
    fd_text, engine, level, index = (argv if argv is not None else sys.argv[1:])[:4]
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    os.nice(NICE)
    config.configure_logging(level, worker=index)  # in the daemon's format, which the environment passes on
    sock = socket.socket(fileno=int(fd_text))
    loop_factory = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(sock, engine))  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
