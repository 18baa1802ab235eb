"""The speaker's single route writer: keeps what ExaBGP announces equal to what is wanted, from one background task.

Callers record the routes they want and return at once (``set_routes``, ``set_route``); nothing they call waits for
ExaBGP. The writer task diffs the wanted set against what the current ExaBGP run has acknowledged, sends the
difference as batched, pipelined commands (``_routes.plan``), and goes again until nothing differs. A new run
(``attach``) holds nothing, so the replay after a restart is the same batched diff, of the whole wanted set. A
session that ExaBGP gains while it runs (``set_peers(fresh=...)``, after a reload) is first sent everything the run
holds, in commands addressed to it alone, so the other sessions see nothing of it.
``flush()`` waits until the writer has caught up. Example::

    writer.set_routes({prefix: attributes})   # returns at once
    await writer.flush()                       # True: ExaBGP acknowledged it; False: no ExaBGP now, replay will
"""

import asyncio
import contextlib
import logging
import time
import types
from collections.abc import AsyncIterator, Collection, Mapping, Sequence

from bgp import _channel, _errors, _exabgp_config, _routes
from config import IpAddress, Prefix, RouteAttributes

__all__ = ["RouteWriter"]

log = logging.getLogger(__name__)


class RouteWriter:
    """The wanted routes, the routes the current ExaBGP run holds, and the one task that sends the difference.

    ``peers`` maps an IP version to the sessions of that family. ExaBGP is judged hung when it acknowledges nothing
    for ``command_timeout`` seconds while commands wait (see ``ExabgpRun.commands``): the writer then kills it, and
    the supervisor restarts it and ``attach``-es the new run.
    """

    def __init__(self, *, peers: Mapping[int, Sequence[IpAddress]], command_timeout: float) -> None:
        self._peers = {version: tuple(addresses) for version, addresses in peers.items()}
        self._timeout = command_timeout
        self._wanted: dict[Prefix, RouteAttributes] = {}
        self._held: dict[Prefix, RouteAttributes] = {}  # acknowledged by self._run
        self._run: _channel.ExabgpRun | None = None
        self._rejected: dict[Prefix, tuple[RouteAttributes | None, _errors.CommandError]] = {}
        self._suspects: set[Prefix] = set()  # in a rejected multi-prefix command: resent one per command
        self._generation = 0
        self._waiters: list[tuple[int, asyncio.Future[bool]]] = []
        self._fresh: set[IpAddress] = set()  # sessions new to the current run: to be sent all it holds
        self._wake = asyncio.Event()
        self._passing = asyncio.Lock()  # held by a pass, or by exclusive()
        self._task: asyncio.Task[None] | None = None

    @property
    def wanted(self) -> Mapping[Prefix, RouteAttributes]:
        """The routes wanted now; read-only."""
        return types.MappingProxyType(self._wanted)

    @property
    def rejected(self) -> Mapping[Prefix, _errors.CommandError]:
        """Wanted changes that ExaBGP answered ``error`` to; not retried until they change or ExaBGP restarts."""
        return {prefix: error for prefix, (_, error) in self._rejected.items()}

    def pending(self) -> frozenset[Prefix]:
        """Prefixes whose wanted state ExaBGP has not acknowledged yet (rejected ones excepted)."""
        changed = {p for p, a in self._wanted.items() if self._held.get(p) != a} | (self._held.keys() - self._wanted)
        return frozenset(p for p in changed if p not in self._rejected)

    def set_routes(self, routes: Mapping[Prefix, RouteAttributes]) -> None:
        """Want exactly ``routes`` (absent: withdrawn). AttributeMismatchError, and nothing changes, if one is bad."""
        for prefix, attributes in routes.items():
            _exabgp_config.check_attributes(prefix, attributes)
        wanted = dict(routes)
        if wanted != self._wanted:
            self._wanted = wanted
            self._changed()

    def set_route(self, prefix: Prefix, attributes: RouteAttributes | None) -> None:
        """Want ``prefix`` announced with ``attributes``, or withdrawn (None)."""
        if attributes is not None:
            _exabgp_config.check_attributes(prefix, attributes)
        if self._wanted.get(prefix) == attributes:
            return
        if attributes is None:
            del self._wanted[prefix]
        else:
            self._wanted[prefix] = attributes
        self._changed()

    def set_peers(self, peers: Mapping[int, Sequence[IpAddress]], *, fresh: Collection[IpAddress] = ()) -> None:
        """The sessions to address from now on, by IP version; ``fresh`` ones (added to ExaBGP, or re-created by it
        with an empty RIB) are first sent every route the current run holds, addressed to them alone."""
        self._peers = {version: tuple(addresses) for version, addresses in peers.items()}
        current = {address for addresses in self._peers.values() for address in addresses}
        self._fresh = (self._fresh | set(fresh)) & current
        self._changed()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the writer between passes: no command of the writer is in flight or sent meanwhile."""
        async with self._passing:
            yield
        self._wake.set()

    def attach(self, run: _channel.ExabgpRun | None) -> None:
        """ExaBGP's current run (None while it restarts); a new run holds nothing, so it gets the whole wanted set."""
        self._run = run
        self._held = {}
        self._fresh.clear()
        self._rejected.clear()
        self._suspects.clear()
        self._wake.set()

    def start(self) -> None:
        """Start the writer task."""
        self._task = asyncio.create_task(self._loop(), name="bgp-route-writer")

    async def close(self) -> None:
        """Stop the writer task; whoever waits in ``flush`` gets False. Idempotent."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._resolve(False)

    async def flush(self) -> bool:
        """Wait until ExaBGP acknowledged the routes wanted at the call (True), or there is no ExaBGP to send them to
        (False: the replay after its restart will). ExabgpTimeoutError if ExaBGP hung meanwhile (it is restarted)."""
        if self._task is None:
            return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._generation, future))
        self._wake.set()
        return await future

    def _changed(self) -> None:
        self._generation += 1
        for prefix in [p for p, (a, _) in self._rejected.items() if self._wanted.get(p) != a]:
            del self._rejected[prefix]
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                async with self._passing:
                    await self._pass()
            except Exception as error:  # a bug: say so at once, fail the waiters, and keep the task alive
                log.exception("event=bgp_writer_failed error=%s", error)
                self._resolve(_errors.BgpError(f"the BGP route writer failed: {error!r}"))
                await asyncio.sleep(1.0)
                self._wake.set()

    async def _pass(self) -> None:
        """Bring the current run one plan closer to the wanted set; wake again if there may be more to do."""
        run = self._run
        if run is None or not run.alive:
            self._resolve(False)  # attach() wakes the loop again
            return
        generation = self._generation
        if self._fresh and not await self._replay(run):
            return
        skip = {prefix: attributes for prefix, (attributes, _) in self._rejected.items()}
        batches = _routes.plan(self._wanted, self._held, peers=self._peers, skip=skip, alone=self._suspects)
        if not batches:
            self._resolve(True, up_to=generation)
            return
        if await self._send(run, batches):
            self._wake.set()  # look again: more may have changed, or the plan was cut at max_bytes

    async def _send(self, run: _channel.ExabgpRun, batches: list[_routes.Batch]) -> bool:
        """Send one plan; whether the run is still usable."""
        for batch in batches:
            if batch.command is None:  # no session of the family: nothing for ExaBGP to carry
                self._held_apply(batch)
        sendable = [batch for batch in batches if batch.command is not None]
        if not sendable:
            return True
        started = time.monotonic()
        routes = sum(len(batch.changes) for batch in sendable)
        try:
            acks = await run.commands([batch.command for batch in sendable if batch.command], timeout=self._timeout)
        except _errors.ExabgpTimeoutError as error:
            log.error("event=exabgp_hung pid=%d routes=%d silent_s=%g", run.process.pid, routes, self._timeout)
            run.kill()
            self._resolve(error)
            return False
        except _channel.ChannelClosed:
            log.info("event=bgp_routes_deferred reason=exabgp_gone routes=%d", routes)
            self._resolve(False)
            return False
        if run is not self._run:  # a new run was attached meanwhile: these acks say nothing about it
            return True
        announced = withdrawn = 0
        for batch, ok in zip(sendable, acks):
            if ok:
                self._held_apply(batch)
                announced += sum(1 for _, attributes in batch.changes if attributes is not None)
                withdrawn += sum(1 for _, attributes in batch.changes if attributes is None)
            elif len(batch.changes) > 1:
                log.warning("event=bgp_batch_rejected routes=%d command=%.200r next=one_per_command",
                            len(batch.changes), batch.command)  # fmt: skip
                self._suspects.update(prefix for prefix, _ in batch.changes)
            else:
                ((prefix, attributes),) = batch.changes
                assert batch.command is not None
                self._rejected[prefix] = (attributes, _errors.CommandError(batch.command))
                self._suspects.discard(prefix)
                log.error("event=bgp_route_rejected vip=%s action=%s command=%r",
                          prefix, "withdraw" if attributes is None else "announce", batch.command)  # fmt: skip
        log.info("event=bgp_routes_sent announced=%d withdrawn=%d commands=%d seconds=%.3f",
                 announced, withdrawn, len(sendable), time.monotonic() - started)  # fmt: skip
        return True

    async def _replay(self, run: _channel.ExabgpRun) -> bool:
        """Send the fresh sessions every route the run holds; whether the run is still usable."""
        fresh = {version: tuple(a for a in addresses if a in self._fresh) for version, addresses in self._peers.items()}
        held = dict(self._held)
        sent: dict[Prefix, RouteAttributes] = {}
        started = time.monotonic()
        while batches := _routes.plan(held, sent, peers=fresh):
            for batch in batches:  # a rejected one too: the other sessions hold it, nothing to retry
                sent.update((prefix, attributes) for prefix, attributes in batch.changes if attributes is not None)
            commands = [batch.command for batch in batches if batch.command is not None]
            if not commands:
                continue
            try:
                acks = await run.commands(commands, timeout=self._timeout)
            except _errors.ExabgpTimeoutError as error:
                log.error("event=exabgp_hung pid=%d replay_to=%s silent_s=%g", run.process.pid,
                          ",".join(map(str, self._fresh)), self._timeout)  # fmt: skip
                run.kill()
                self._resolve(error)
                return False
            except _channel.ChannelClosed:
                self._resolve(False)
                return False
            for command, ok in zip(commands, acks):
                if not ok:
                    log.error("event=bgp_replay_rejected command=%.200r", command)
        if run is self._run:
            log.info("event=bgp_routes_replayed peers=%s routes=%d seconds=%.3f", ",".join(map(str, sorted(
                self._fresh, key=str))), len(sent), time.monotonic() - started)  # fmt: skip
            self._fresh.clear()
        return True

    def _held_apply(self, batch: _routes.Batch) -> None:
        for prefix, attributes in batch.changes:
            self._suspects.discard(prefix)
            if attributes is None:
                self._held.pop(prefix, None)
                log.debug("event=bgp_withdrawn vip=%s", prefix)
            else:
                self._held[prefix] = attributes
                log.debug("event=bgp_announced vip=%s med=%s", prefix, attributes.med)

    def _resolve(self, outcome: bool | _errors.BgpError, *, up_to: int | None = None) -> None:
        """Answer the ``flush`` waiters (those from generation ``up_to`` or before, if given)."""
        keep: list[tuple[int, asyncio.Future[bool]]] = []
        for generation, future in self._waiters:
            if up_to is not None and generation > up_to:
                keep.append((generation, future))
            elif future.done():
                continue
            elif isinstance(outcome, _errors.BgpError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        self._waiters = keep
