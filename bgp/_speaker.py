"""The BGP speaker: VIP routes announced through a supervised ExaBGP child.

Example (needs a peer to reach Established; announcing works either way)::

    async with bgp.Speaker(config.BgpConfig(local_as=65001, router_id="192.0.2.1", peers=[...])) as speaker:
        speaker.set_routes({ipaddress.ip_network("192.0.2.10/32"): config.RouteAttributes(med=10)})  # at once
        await speaker.flush()   # True once ExaBGP acknowledged it
        speaker.peers()   # {IPv4Address('192.0.2.254'): PeerState(state=<PeerStatus.ESTABLISHED ...>, routes_sent=1)}
        speaker.set_routes({})  # withdraw everything
"""

import asyncio
import logging
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from bgp import _channel, _errors, _events, _exabgp_config, _peers, _reconfig, _reload, _runtime, _writer
from config import BgpConfig, IpAddress, Prefix, RouteAttributes

__all__ = ["Speaker"]

log = logging.getLogger(__name__)

_BRIDGE = Path(__file__).with_name("_bridge.py")
_EXABGP_MAIN = Path(__file__).with_name("_exabgp_main.py")


class Speaker:
    """Announces and withdraws VIP prefixes to the configured peers; nothing is announced until asked.

    ``set_routes`` records the complete set of routes wanted and returns at once; one writer task inside the speaker
    sends ExaBGP the difference, batched and pipelined, so no caller ever waits on ExaBGP (``flush`` waits, if
    wanted). ExaBGP is judged hung when commands wait and it acknowledges none for ``command_timeout`` seconds that
    this event loop was awake to see (a busy loop is not blamed on ExaBGP); it is then killed and restarted.

    ``start()`` runs ExaBGP; if it exits it is restarted with back-off (``restart_delay`` doubling up to
    ``max_restart_delay``, back to ``restart_delay`` once a run outlived ``max_restart_delay``) and the wanted set
    is replayed the same batched way. ``reconfigure()`` applies a new config through ExaBGP's reload, touching only
    the sessions of peers that changed. ``stop()`` withdraws every route, waits (up to ``drain_timeout``) until
    ExaBGP reports the withdrawals sent to every established peer, then closes the sessions, each with a Cease
    NOTIFICATION (Administrative Shutdown). If this process dies, ExaBGP dies with it (PDEATHSIG) and the peers drop
    the routes.

    With ``graceful_restart`` in the config (RFC 4724) the sessions advertise it and ExaBGP's own End-of-RIB is off:
    ``end_of_rib()`` sends one to each session once the caller's routes are complete, and ``stop(withdraw=False)``
    kills ExaBGP so that the sessions drop without a NOTIFICATION and the peers keep the routes for the restart time.

    ExaBGP's config (0600: it holds the MD5 passwords) and the API socket live in a fresh private directory under
    ``runtime_dir`` (default: ``$RUNTIME_DIRECTORY``, or ``/run/xdplb``; see ``bgp._runtime``), removed by
    ``stop()``; one a SIGKILLed daemon left behind is removed by the next ``start()``.
    """

    def __init__(
        self,
        config: BgpConfig,
        *,
        exabgp: Sequence[str] = (sys.executable, os.fspath(_EXABGP_MAIN)),
        command_timeout: float = 5.0,
        start_timeout: float = 20.0,
        restart_delay: float = 0.5,
        max_restart_delay: float = 30.0,
        drain_timeout: float = 2.0,
        on_peer_change: Callable[[_peers.PeerState], None] | None = None,
        runtime_dir: Path | None = None,
    ) -> None:
        self._config = config
        self._exabgp = tuple(exabgp)
        self._command_timeout = command_timeout
        self._start_timeout = start_timeout
        self._restart_delay = restart_delay
        self._max_restart_delay = max_restart_delay
        self._drain_timeout = drain_timeout
        self._on_peer_change = on_peer_change
        self._runtime_dir = runtime_dir
        families: dict[int, list[IpAddress]] = {}
        for peer in config.peers:
            families.setdefault(peer.address.version, []).append(peer.address)
        self._writer = _writer.RouteWriter(peers=families, command_timeout=command_timeout)
        self._peers = _peers.PeerTable((peer.address for peer in config.peers), self._peer_changed)
        self._watchers: set[asyncio.Queue[_peers.PeerState]] = set()
        self._sent_changed = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stop_done = asyncio.Event()
        self._state = "new"
        self._run: _channel.ExabgpRun | None = None
        self._workdir: Path | None = None
        self._server: asyncio.AbstractServer | None = None
        self._connections: _channel.Connections = asyncio.Queue()
        self._supervisor: asyncio.Task[None] | None = None
        self._restarts = 0
        self._bridge: list[str] = []
        self._exabgp_lock = asyncio.Lock()  # one of: (re)starting ExaBGP, reconfiguring it
        self._routes_complete = False  # end_of_rib() called: with graceful restart, each session gets an End-of-RIB
        self._eor_tasks: set[asyncio.Task[None]] = set()
        # Rendering checks the peers (passwords, families) before anything runs.
        _exabgp_config.render(config, bridge=["bridge"])

    @property
    def announced(self) -> Mapping[Prefix, RouteAttributes]:
        """The routes wanted: announced, or being sent (``pending()``), or to be replayed; read-only."""
        return self._writer.wanted

    @property
    def rejected(self) -> Mapping[Prefix, _errors.CommandError]:
        """Wanted changes that ExaBGP refused (``error``); not retried until they change or ExaBGP restarts."""
        return self._writer.rejected

    def pending(self) -> frozenset[Prefix]:
        """Prefixes whose wanted state ExaBGP has not acknowledged yet (empty: in sync; rejected ones excepted)."""
        return self._writer.pending()

    def set_routes(self, routes: Mapping[Prefix, RouteAttributes]) -> None:
        """Want exactly ``routes`` announced (a prefix absent is withdrawn); returns at once, without I/O.

        Idempotent: the same set again sends nothing. The writer task sends the difference in the background.
        AttributeMismatchError, and nothing changes, if an entry is bad; SpeakerStateError outside start()..stop().
        """
        self._require_running("set_routes")
        self._writer.set_routes(routes)

    async def flush(self) -> bool:
        """Wait until ExaBGP acknowledged the routes wanted at the call: True; False if ExaBGP is down (restarting:
        the replay will send them). ExabgpTimeoutError if ExaBGP hung meanwhile (it is restarted). Rejections do not
        raise here: see ``rejected``."""
        return await self._writer.flush()

    def end_of_rib(self) -> None:
        """Say that the routes wanted are complete (the daemon is ready). With graceful restart, every established
        session gets an End-of-RIB once those routes are sent, and so does each session that comes up later: a peer
        that kept our routes from before a restart then drops only the stale ones we did not announce again.
        Without graceful restart ExaBGP sends End-of-RIB itself, and this does nothing."""
        if self._routes_complete:
            return
        self._routes_complete = True
        for address, state in self._peers.snapshot().items():
            if state.state is _peers.PeerStatus.ESTABLISHED:
                self._send_eor(address)

    def _send_eor(self, address: IpAddress) -> None:
        if self._config.graceful_restart is None or self._state != "running":
            return
        task = asyncio.get_running_loop().create_task(self._eor(address), name=f"bgp-eor {address}")
        self._eor_tasks.add(task)
        task.add_done_callback(self._eor_tasks.discard)

    async def _eor(self, address: IpAddress) -> None:
        family = "ipv4" if address.version == 4 else "ipv6"
        try:
            await self._writer.flush()  # the routes first: ExaBGP sends them in the order it was given them
            run = self._run
            if run is None or not run.alive:
                return  # ExaBGP restarts: the session comes up again, and gets its End-of-RIB then
            await run.command(f"neighbor {address} announce eor {family} unicast", timeout=self._command_timeout)
        except _errors.BgpError as error:
            log.warning("event=bgp_eor_failed peer=%s error=%s", address, error)
            return
        log.info("event=bgp_eor_sent peer=%s routes=%d", address, len(self._writer.wanted))

    @property
    def restarts(self) -> int:
        """How many times ExaBGP has been restarted (and the announced set replayed) since ``start``."""
        return self._restarts

    @property
    def exabgp_pid(self) -> int | None:
        """The running ExaBGP's process id, or None while it is (re)starting or stopped."""
        return self._run.process.pid if self._run is not None and self._run.alive else None

    def peers(self) -> Mapping[IpAddress, _peers.PeerState]:
        """Every configured peer's session state, keyed by peer address."""
        return self._peers.snapshot()

    async def watch_peers(self) -> AsyncIterator[_peers.PeerState]:
        """Yield each peer state change from now on, until the speaker stops."""
        queue: asyncio.Queue[_peers.PeerState] = asyncio.Queue()
        self._watchers.add(queue)
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            while not self._stopped.is_set():
                got = asyncio.ensure_future(queue.get())
                await asyncio.wait({got, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not got.done():
                    got.cancel()
                    return
                yield got.result()
        finally:
            stopped.cancel()
            self._watchers.discard(queue)

    async def start(self) -> None:
        """Start ExaBGP with no routes; BgpError if it does not come up."""
        if self._state != "new":
            raise _errors.SpeakerStateError(f"start() on a speaker that is {self._state}; make a new Speaker")
        self._state = "starting"
        try:
            base = self._runtime_dir if self._runtime_dir is not None else _runtime.default_base()
            self._workdir = _runtime.new_instance_dir(_runtime.prepare_base(base))
            socket_path = self._workdir / "api.sock"
            self._server = await asyncio.start_unix_server(self._bridge_connected, path=os.fspath(socket_path))
            os.chmod(socket_path, 0o600)
            bridge = [sys.executable, os.fspath(_BRIDGE), os.fspath(socket_path)]
            self._bridge = bridge
            _runtime.write_private(self._workdir / "exabgp.conf", _exabgp_config.render(self._config, bridge=bridge))
            self._run = await self._spawn()
        except BaseException as error:
            await self._cleanup()
            self._state = "stopped"
            if isinstance(error, OSError):
                raise _errors.BgpError(f"cannot set up ExaBGP's directory or API socket: {error}") from error
            raise
        self._writer.attach(self._run)
        self._writer.start()
        self._supervisor = asyncio.create_task(self._supervise(), name="bgp-exabgp-supervisor")
        self._state = "running"
        log.info("event=bgp_started peers=%d workdir=%s", len(self._config.peers), self._workdir)

    async def stop(self, *, withdraw: bool = True) -> None:
        """Withdraw every route, let the withdrawals reach the peers, close the sessions, stop ExaBGP. Idempotent.

        With ``withdraw`` False (a restart stop under graceful restart) ExaBGP is killed at once instead: the sessions
        drop without a NOTIFICATION, and the peers keep our routes for the restart time.
        """
        if self._state in ("new", "stopped"):
            self._state = "stopped"
            return
        if self._state == "stopping":  # a concurrent stop(): wait for the first one
            await self._stop_done.wait()
            return
        self._state = "stopping"
        withdrawn = len(self._writer.wanted) if withdraw else 0
        try:
            self._stopped.set()
            if self._supervisor is not None:
                self._supervisor.cancel()
                await asyncio.gather(self._supervisor, return_exceptions=True)
            for task in list(self._eor_tasks):
                task.cancel()
            run = self._run
            if not withdraw and run is not None:
                run.kill()  # SIGKILL: the kernel closes the sessions, with no NOTIFICATION from ExaBGP
                await run.wait_ended()
                log.info(
                    "event=bgp_left_routes routes=%d note=peers_keep_them_for_the_restart_time",
                    len(self._writer.wanted),
                )
                run = None
            elif withdraw:
                self._writer.set_routes({})  # one `clear adj-rib out`, whatever the number of routes
            if run is not None and run.alive:
                try:
                    await self._writer.flush()  # bounded: a hung ExaBGP is killed after command_timeout
                except _errors.BgpError as error:
                    log.warning("event=bgp_stop_withdraw_failed routes=%d error=%s", withdrawn, error)
                await self._writer.close()
                if run.alive:
                    await self._drain()
                    await run.shutdown(timeout=self._command_timeout, closed=self._sessions_down)
            elif run is not None:
                await run.wait_ended()
            self._run = None
            self._peers.all_down("stopped")
        finally:
            await self._writer.close()
            await self._cleanup()  # kills ExaBGP if the above did not get to stop it
            self._state = "stopped"
            self._stop_done.set()
        log.info("event=bgp_stopped withdrawn=%d", withdrawn)

    async def reconfigure(self, new: BgpConfig) -> list[str]:
        """Apply ``new`` to the running speaker in place; what changed, one line per peer (``[]``: nothing).

        ``['peer 192.0.2.9 added', 'peer 192.0.2.7 removed', 'peer 192.0.2.8 changed: hold_time']``

        ExaBGP re-reads its config (``reload``) and compares neighbours: only the sessions of peers added, removed
        or changed are touched, the others keep running and keep their routes. By field:

        - ``attributes``: nothing here; the routes carry their attributes, and ``set_routes`` with the new ones
          re-announces in place, sessions untouched.
        - a peer added: its session starts and gets every route wanted (the writer sends them to it alone).
        - a peer removed: its session ends with a Cease NOTIFICATION (6/3, peer de-configured), its routes with it.
        - a peer's ``hold_time``, ``port``, ``password``, ``passive``: that session restarts (Cease 6/3, then a
          new connection with the new settings); ExaBGP resends it the routes.
        - a peer's ``peer_as``, ``local_address``, its effective ``local_as``, or ``router_id`` (which every peer
          uses): ExaBGP sees a new neighbour. The old session ends with a Cease, a new one starts and is sent the
          routes. So a change of ``router_id`` or ``local_as`` restarts every session using it, not ExaBGP.

        The new config is checked first, by ``verify_config`` and then by a throwaway ``exabgp validate``; the
        running ExaBGP never sees a config these refuse. If the reload still fails (ExaBGP refuses it, or has not
        done it after 15 s) its previous config is put back and ReconfigureError raised: the old config in force,
        no session touched. The exception: a removed or re-created peer's session is closed by a first reload (it
        is made passive) before a second applies the rest; if the second fails, the first is undone, and that
        peer reconnects. While ExaBGP is restarting, the new config is simply what it starts with.
        SpeakerStateError outside start()..stop().
        """
        self._require_running("reconfigure")
        found = _exabgp_config.problems(new)
        if found:
            raise _errors.ReconfigureError("; ".join(f"bgp.{_path(path)}: {message}" for path, message in found), found)
        async with self._exabgp_lock:
            self._require_running("reconfigure")
            old = self._config
            changes = _reconfig.diff(old, new)
            if not changes:
                self._config = new
                return []
            text = _exabgp_config.render(new, bridge=self._bridge)
            secrets = {p.password for p in (*old.peers, *new.peers) if p.password}
            assert self._workdir is not None
            await _reload.validate(
                self._exabgp, self._workdir / "exabgp.conf.check", text, secrets=secrets, timeout=self._start_timeout
            )
            run = self._run
            if run is None or not run.alive:  # the supervisor's next start reads the new file and replays
                _reload.write(self._workdir / "exabgp.conf", text)
                self._adopt(new, fresh=())
                log.info("event=bgp_reconfigured exabgp=restarting changes=%r", changes.describe())
                return changes.describe()
            closing = [*changes.removed, *changes.recreated]
            previous = _exabgp_config.render(old, bridge=self._bridge)
            self._peers.set_addresses([*(p.address for p in old.peers), *changes.added])  # events of new sessions
            closed = False
            async with self._writer.exclusive():
                try:
                    if any(self._peers.snapshot()[a].state is not _peers.PeerStatus.DOWN for a in closing):
                        passive = _exabgp_config.render(old, bridge=self._bridge, closing=closing)
                        await self._reload(run, passive, secrets)
                        closed = True
                        await self._closed(closing)
                    await self._reload(run, text, secrets)
                except BaseException as error:
                    _reload.write(self._workdir / "exabgp.conf", previous)
                    self._peers.set_addresses(p.address for p in old.peers)
                    if closed and run.alive and not isinstance(error, asyncio.CancelledError):
                        try:
                            await self._reload(run, previous, secrets)
                        except _errors.BgpError as undo:
                            log.error("event=bgp_reconfigure_undo_failed error=%s", undo)
                    if isinstance(error, _errors.ReconfigureError):
                        raise
                    if isinstance(error, _errors.BgpError):
                        raise _errors.ReconfigureError(f"the new BGP config was not applied: {error}") from error
                    raise
                self._adopt(new, fresh=[*changes.added, *changes.changed])
        log.info("event=bgp_reconfigured changes=%r", changes.describe())
        return changes.describe()

    async def __aenter__(self) -> "Speaker":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def announce(self, prefix: Prefix, attributes: RouteAttributes) -> None:
        """Announce one prefix (replacing its attributes) and wait for ExaBGP; a no-op if already so announced.

        ``set_routes`` without ``flush`` does not wait; this waits, for callers that change one route at a time.
        CommandError if ExaBGP rejects it (then nothing changes), ExabgpTimeoutError if ExaBGP hangs (it is
        restarted and the replay carries the change), AttributeMismatchError for a next-hop of another family.
        """
        self._require_running("announce")
        await self._change(prefix, attributes)

    async def withdraw(self, prefix: Prefix) -> None:
        """Withdraw ``prefix`` from every peer and wait for ExaBGP; a no-op if it is not announced."""
        self._require_running("withdraw")
        await self._change(prefix, None)

    async def _change(self, prefix: Prefix, attributes: RouteAttributes | None) -> None:
        previous = self._writer.wanted.get(prefix)
        if previous == attributes:
            return
        self._writer.set_route(prefix, attributes)
        await self._writer.flush()
        error = self._writer.rejected.get(prefix)
        if error is not None and self._writer.wanted.get(prefix) == attributes:
            self._writer.set_route(prefix, previous)  # what ExaBGP still holds
            raise error

    async def _reload(self, run: _channel.ExabgpRun, text: str, secrets: Collection[str]) -> None:
        assert self._workdir is not None
        await _reload.reload(
            run, self._workdir / "exabgp.conf", text, secrets=secrets, command_timeout=self._command_timeout
        )

    def _adopt(self, new: BgpConfig, *, fresh: Sequence[IpAddress]) -> None:
        """Make ``new`` the config in force: the writer's sessions, the peer table."""
        self._config = new
        families: dict[int, list[IpAddress]] = {}
        for peer in new.peers:
            families.setdefault(peer.address.version, []).append(peer.address)
        self._writer.set_peers(families, fresh=fresh)
        self._peers.set_addresses(peer.address for peer in new.peers)

    async def _closed(self, addresses: Sequence[IpAddress], timeout: float = 2.0) -> None:
        """Wait until the sessions to ``addresses`` are down (their Cease sent), or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while any(self._peers.snapshot()[a].state is not _peers.PeerStatus.DOWN for a in addresses):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("event=bgp_close_timeout peers=%s", ",".join(map(str, addresses)))
                return
            self._sent_changed.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._sent_changed.wait()
            except TimeoutError:
                pass

    def _require_running(self, call: str) -> None:
        if self._state != "running":
            raise _errors.SpeakerStateError(f"{call}() on a speaker that is {self._state}; call start() first")

    async def _spawn(self) -> _channel.ExabgpRun:
        assert self._workdir is not None
        argv = [*self._exabgp, "server", os.fspath(self._workdir / "exabgp.conf")]
        return await _channel.ExabgpRun.spawn(
            argv,
            env=_exabgp_config.environment(os.environ),
            connections=self._connections,
            on_event=self._event,
            timeout=self._start_timeout,
        )

    async def _supervise(self) -> None:
        delay = self._restart_delay
        while True:
            run = self._run
            assert run is not None
            code = await run.wait_ended()
            self._run = None
            self._writer.attach(None)
            self._peers.all_down("exabgp exited")
            if time.monotonic() - run.started > self._max_restart_delay:  # it had been up a while: start over
                delay = self._restart_delay
            log.warning(
                "event=exabgp_exited pid=%d returncode=%s restart_in=%gs last_output=%r",
                run.process.pid,
                code,
                delay,
                run.last_output[-300:],
            )
            while True:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_restart_delay)
                async with self._exabgp_lock:  # not while reconfigure() rewrites its config
                    if await self._restart(next_try_in=delay):
                        break

    async def _restart(self, *, next_try_in: float) -> bool:
        """Start ExaBGP and replay the wanted set through the writer; whether both worked."""
        try:
            new = await self._spawn()
        except _errors.BgpError as error:
            log.error("event=exabgp_restart_failed error=%s next_try_in=%gs", error, next_try_in)
            return False
        self._run = new
        self._writer.attach(new)
        try:
            replayed = await self._writer.flush()
        except _errors.BgpError:  # hung (the writer killed it), or the writer failed
            replayed = False
        if not replayed:
            log.error("event=exabgp_restart_failed error=replay_not_acknowledged pid=%d next_try_in=%gs",
                      new.process.pid, next_try_in)  # fmt: skip
            new.kill()
            await new.wait_ended()
            self._run = None
            self._writer.attach(None)
            return False
        self._restarts += 1
        log.info("event=exabgp_restarted pid=%d replayed=%d", new.process.pid, len(self._writer.wanted))
        return True

    async def _drain(self) -> None:
        """Wait until no established peer carries a route from us, or ``drain_timeout`` passes."""
        deadline = time.monotonic() + self._drain_timeout
        while True:
            carrying = [
                address
                for address, state in self._peers.snapshot().items()
                if state.state is _peers.PeerStatus.ESTABLISHED and self._peers.sent(address)
            ]
            remaining = deadline - time.monotonic()
            if not carrying:
                return
            if remaining <= 0:
                log.warning("event=bgp_drain_timeout peers=%s", ",".join(map(str, carrying)))
                return
            self._sent_changed.clear()
            try:
                async with asyncio.timeout(remaining):  # not wait_for: on 3.11 it can swallow a cancel
                    await self._sent_changed.wait()
            except TimeoutError:
                pass

    async def _sessions_down(self) -> None:
        """Return once ExaBGP reports every session down."""
        while any(state.state is not _peers.PeerStatus.DOWN for state in self._peers.snapshot().values()):
            self._sent_changed.clear()
            await self._sent_changed.wait()

    def _event(self, message: Mapping[str, Any]) -> None:
        event = _events.parse(message)
        if event is None:
            return
        self._peers.apply(event)
        if isinstance(event, _events.SentUpdate):
            self._sent_changed.set()

    def _peer_changed(self, state: _peers.PeerState) -> None:
        log.info(
            "event=bgp_peer_state peer=%s state=%s routes_sent=%d reason=%s",
            state.address,
            state.state.value,
            state.routes_sent,
            state.reason,
        )
        if state.state is _peers.PeerStatus.ESTABLISHED and self._routes_complete:
            self._send_eor(state.address)
        self._sent_changed.set()
        for queue in self._watchers:
            queue.put_nowait(state)
        if self._on_peer_change is not None:
            self._on_peer_change(state)

    async def _bridge_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._connections.put((reader, writer))

    async def _cleanup(self) -> None:
        self._writer.attach(None)
        if self._run is not None:
            self._run.kill()
            await self._run.wait_ended()
            self._run = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def _path(path: Sequence[str | int]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")
