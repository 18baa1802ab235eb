"""One run of ExaBGP: the child process, the bridge connection, acknowledged commands and JSON events.

ExaBGP is started in its own session (a terminal's Ctrl-C must not reach it before routes are withdrawn) with
PR_SET_PDEATHSIG = SIGKILL (set by `setpriv`), so that it dies, and the kernel closes its sessions, whenever this process dies, SIGKILL
included. PDEATHSIG follows the thread that forked: spawn from the event loop's thread only.
"""

import asyncio
import collections
import json
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from bgp import _errors

__all__ = ["ChannelClosed", "Connections", "ExabgpRun"]

log = logging.getLogger(__name__)

Connections = asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]


class ChannelClosed(_errors.BgpError):
    """ExaBGP or its bridge went away before answering."""


def dying_with_us(argv: Sequence[str]) -> list[str]:
    """``argv`` run through util-linux's ``setpriv --pdeathsig KILL``: the kernel kills it when the thread that
    started it dies. No Python runs between fork and exec (``preexec_fn`` is unsafe in a process with threads)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise _errors.BgpError("setpriv not found: install util-linux (ExaBGP must die with the daemon)")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]


class ExabgpRun:
    """A started ExaBGP whose bridge has connected; one batch of pipelined commands in flight at a time."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        on_event: Callable[[Mapping[str, Any]], None],
        output: collections.deque[str],
        output_task: "asyncio.Task[None]",
        listeners: list[Callable[[str], None]] | None = None,
    ) -> None:
        self.process = process
        self.started = time.monotonic()
        self._writer = writer
        self._on_event = on_event
        self._output = output
        self._output_task = output_task
        self._listeners = listeners if listeners is not None else []
        self._lock = asyncio.Lock()
        # One future per command sent, oldest first: ExaBGP acks in order, so even the ack of a command whose
        # caller was cancelled is matched to it and not to the next command.
        self._acks: collections.deque[asyncio.Future[bool]] = collections.deque()
        self._closed = asyncio.Event()
        self._reader_task = asyncio.create_task(self._read(reader), name=f"exabgp-{process.pid}-api")

    @classmethod
    async def spawn(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        connections: Connections,
        on_event: Callable[[Mapping[str, Any]], None],
        timeout: float,
    ) -> "ExabgpRun":
        """Start ExaBGP and wait until its bridge connects; BgpError (with ExaBGP's last output) if it does not."""
        while not connections.empty():  # a late bridge of an earlier, abandoned run
            connections.get_nowait()[1].close()
        process = await asyncio.create_subprocess_exec(
            *dying_with_us(argv),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
        )
        log.info("event=exabgp_started pid=%d", process.pid)
        output: collections.deque[str] = collections.deque(maxlen=20)
        listeners: list[Callable[[str], None]] = []
        assert process.stdout is not None
        output_task = asyncio.create_task(_relay_output(process.pid, process.stdout, output, listeners))
        connected = asyncio.ensure_future(connections.get())
        exited = asyncio.ensure_future(process.wait())
        try:
            done, _ = await asyncio.wait({connected, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            connected.cancel()
            output_task.cancel()
            await _kill(process)
            raise
        finally:
            exited.cancel()
        if connected not in done:
            connected.cancel()
            await _kill(process)
            await output_task
            how = f"exited with {process.returncode}" if exited in done else f"did not connect within {timeout:g}s"
            raise _errors.BgpError(f"exabgp {how}; its last output: {' | '.join(output) or '(none)'}")
        reader, writer = connected.result()
        return cls(
            process, reader, writer, on_event=on_event, output=output, output_task=output_task, listeners=listeners
        )

    @property
    def alive(self) -> bool:
        """Whether commands can still be sent."""
        return not self._closed.is_set() and self.process.returncode is None

    @property
    def last_output(self) -> str:
        """ExaBGP's last lines of output, for error messages."""
        return " | ".join(self._output)

    async def command(self, text: str, *, timeout: float) -> None:
        """Send one command and wait for its ack: CommandError on ``error``, ExabgpTimeoutError if none comes."""
        (ok,) = await self.commands([text], timeout=timeout)
        if not ok:
            raise _errors.CommandError(text)

    async def commands(self, texts: Sequence[str], *, timeout: float) -> list[bool]:
        """Send ``texts`` at once (pipelined) and wait for their acks, in order: True for ``done``, False for ``error``.

        ExaBGP acks its commands in order, so any number can be in flight. ExabgpTimeoutError when ExaBGP stops
        making progress: commands are waiting and no ack came for ``timeout`` seconds, counted from the later of the
        last ack and the write, and only while this event loop was there to see it. A stall of our own loop counts
        for at most ``2 * tick`` (so a busy daemon never blames ExaBGP for its own slowness); a hung ExaBGP still
        fails after ``timeout`` seconds. ChannelClosed if ExaBGP goes away first.
        """
        async with self._lock:
            if not self.alive:
                raise ChannelClosed(f"exabgp is gone; {len(texts)} command(s) not sent, the first {texts[0]!r}")
            loop = asyncio.get_running_loop()
            futures = [loop.create_future() for _ in texts]
            self._acks.extend(futures)
            try:
                self._writer.write(b"".join(text.encode() + b"\n" for text in texts))
                try:
                    async with asyncio.timeout(timeout):  # the bridge stopped reading: ExaBGP is stuck too
                        await self._writer.drain()
                except TimeoutError:  # before OSError, of which it is a subclass
                    raise _errors.ExabgpTimeoutError(texts[0], timeout) from None
                return [await self._progress(future, text, timeout) for future, text in zip(futures, texts)]
            except _errors.ExabgpTimeoutError:  # a TimeoutError, hence an OSError: not a closed channel
                raise
            except (ConnectionError, OSError) as error:
                raise ChannelClosed(f"exabgp is gone; {texts[0]!r} and what followed not acknowledged") from error
            finally:
                for future in futures:  # left behind by an error or a cancel: their acks, if any, are skipped
                    if future.done() and not future.cancelled():
                        future.exception()  # retrieved, so asyncio does not warn about it
                    future.cancel()

    async def _progress(self, ack: "asyncio.Future[bool]", text: str, timeout: float) -> bool:
        """Wait for ``ack``, judging ExaBGP hung after ``timeout`` seconds of its silence that this loop witnessed."""
        tick = min(max(timeout / 10, 0.01), 0.25)
        silent = 0.0
        last = time.monotonic()
        while not ack.done():
            await asyncio.wait({ack}, timeout=tick)  # not wait_for: it would cancel the ack on timeout
            now = time.monotonic()
            silent += min(now - last, 2 * tick)
            last = now
            if not ack.done() and silent >= timeout:
                raise _errors.ExabgpTimeoutError(text, timeout)
        return ack.result()

    async def wait_ended(self) -> int:
        """Wait until ExaBGP exits or its bridge disconnects (then ExaBGP is made to exit); its return code."""
        exited = asyncio.ensure_future(self.process.wait())
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({exited, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            closed.cancel()
        if self.process.returncode is None:  # the bridge died; api.terminate should end ExaBGP, make sure
            try:
                async with asyncio.timeout(2.0):
                    await asyncio.shield(self.process.wait())
            except TimeoutError:
                await _kill(self.process)
        await self._finish()
        assert self.process.returncode is not None
        return self.process.returncode

    async def shutdown(self, *, timeout: float, closed: Callable[[], Awaitable[object]] | None = None) -> int:
        """Ask ExaBGP to close its sessions and exit; kill it if it has not exited after ``timeout``.

        Once its sessions are closed ExaBGP still takes about 0.3 s to end its helper and itself, with nothing left
        to tell the peers: when ``closed`` (a coroutine function that returns once every session is down) returns
        first, ExaBGP is killed then.
        """
        acknowledged = False
        if self.alive:
            try:
                await self.command("shutdown", timeout=timeout)
                acknowledged = True
            except _errors.BgpError as error:
                log.debug("event=exabgp_shutdown_unacknowledged error=%s", error)
        exited = asyncio.ensure_future(asyncio.shield(self.process.wait()))
        waits: set[asyncio.Future[Any]] = {exited}
        if closed is not None and acknowledged:
            waits.add(asyncio.ensure_future(closed()))
        try:
            done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        self._writer.close()
        if self.process.returncode is None:
            if done:
                log.debug("event=exabgp_killed pid=%d reason=sessions_closed", self.process.pid)
            else:
                log.warning("event=exabgp_shutdown_timeout pid=%d timeout=%gs", self.process.pid, timeout)
            await _kill(self.process)
        await self._finish()
        assert self.process.returncode is not None
        return self.process.returncode

    def expect_output(self, *needles: str) -> "asyncio.Future[str]":
        """A future of ExaBGP's first line of output from now on that contains one of ``needles`` (its log: how
        ExaBGP tells whether a ``reload`` worked). Cancel it if no longer wanted; it fails with ChannelClosed if
        ExaBGP's output ends first."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def listen(line: str) -> None:
            if future.done():
                self._listeners.remove(listen)
            elif not line or any(needle in line for needle in needles):
                self._listeners.remove(listen)
                if line:
                    future.set_result(line)
                else:
                    future.set_exception(ChannelClosed("exabgp's output ended"))

        if self._output_task.done():
            future.set_exception(ChannelClosed("exabgp's output ended"))
        else:
            self._listeners.append(listen)
        return future

    def kill(self) -> None:
        """Kill ExaBGP at once (the peers see the TCP session close)."""
        if self.process.returncode is None:
            self.process.kill()

    async def _finish(self) -> None:
        self._writer.close()
        self._reader_task.cancel()
        await asyncio.gather(self._reader_task, self._output_task, return_exceptions=True)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                text = line.decode(errors="replace").strip()
                if text in ("done", "error"):
                    if not self._acks:
                        log.warning("event=exabgp_unexpected_ack ack=%s", text)
                    elif not (ack := self._acks.popleft()).done():
                        ack.set_result(text == "done")
                elif text.startswith("{"):
                    try:
                        message = json.loads(text)
                    except ValueError:
                        log.warning("event=exabgp_bad_json line=%r", text[:200])
                        continue
                    self._on_event(message)
                elif text:
                    log.debug("event=exabgp_api_line line=%r", text[:200])
        except (ConnectionError, OSError) as error:
            log.debug("event=exabgp_bridge_error error=%s", error)
        finally:
            self._closed.set()
            while self._acks:
                if not (ack := self._acks.popleft()).done():
                    ack.set_exception(ChannelClosed("exabgp closed the API channel"))


async def _relay_output(
    pid: int, stream: asyncio.StreamReader, tail: collections.deque[str], listeners: list[Callable[[str], None]]
) -> None:
    try:
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            tail.append(text)
            log.debug("event=exabgp_output pid=%d line=%r", pid, text)
            for listener in list(listeners) if text else ():
                listener(text)
    finally:
        for listener in list(listeners):  # "" says the output ended
            listener("")


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        try:
            process.kill()
        except ProcessLookupError:
            pass
    await process.wait()
