"""Reloads are transactional, one at a time, and route-attribute changes do not touch the BGP sessions.

The real daemon (checks in worker processes, neighbour events from the kernel) with the fake data plane and a
fake speaker: no root needed. Each test asserts on what the daemon then runs, not only on the reload's answer.
"""

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest

import bgp
import bpf
import config
import healthchecks
from balancer import daemon, desired, faces, neighbours
from tests.balancer.fake_plane import FakeDataPlane

CHECK_PORT_CONFIG = "{type: tcp, port: %d, timing: {interval: 0.2, timeout: 0.1, rise: 1, fall: 1}}"


def document(
    *,
    port: int,
    interfaces: str = "[lo]",
    med: int = 10,
    peers: str = "192.0.2.1",
    path: str = "",
    extra_service: bool = False,
    with_bgp: bool = True,
) -> str:
    check = CHECK_PORT_CONFIG % port
    peer_list = ", ".join(f"{{address: {address}, peer_as: 65000}}" for address in peers.split())
    text = f"""\
interfaces: {interfaces}
bgp:
  local_as: 65001
  router_id: 192.0.2.5
  peers: [{peer_list}]
  attributes: {{med: {med}}}
services:
  - name: web
    vip: 192.0.2.100
    port: 80
    protocol: tcp
    checks: [{check}]
    backends: [{{address: 127.0.0.1}}]
"""
    if not with_bgp:
        text = text[: text.index("bgp:")] + text[text.index("services:") :]
    if extra_service:
        text += f"""\
  - name: api
    vip: 192.0.2.101
    port: 80
    protocol: tcp
    checks: [{check}]
    backends: [{{address: 127.0.0.2}}]
"""
    return text


def _ifindexes(interfaces: Any) -> set[int]:
    """The ifindexes of ``interfaces``: a collection of them, or a mapping name -> ifindex."""
    return set(interfaces.values()) if isinstance(interfaces, Mapping) else set(interfaces)


class ResolvedNeighbours:
    """Every backend resolved (a fixed MAC): the kernel's neighbour table, faked."""

    def __init__(self, on_change: Any, *, interfaces: Any = ()) -> None:
        self.watched: set[Any] = set()
        self.interfaces = _ifindexes(interfaces)
        self.probed: list[Any] = []

    async def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def watch(self, addresses: Any, *, pinned: Any = None) -> dict[Any, str | None]:
        new = set(addresses) - self.watched
        self.watched = set(addresses)
        return {address: "02:00:5e:00:53:01" for address in new}

    def set_interfaces(self, interfaces: Any) -> None:
        self.interfaces = _ifindexes(interfaces)

    def unresolved(self) -> list[Any]:
        return []

    def probe(self, addresses: Any) -> None:
        self.probed.extend(addresses)


class FakeSpeaker:
    """``bgp.Speaker``'s surface as the daemon uses it; records every instance, start and stop."""

    instances: list["FakeSpeaker"] = []
    fail_with: str | None = None  # a peer address: a config with it fails to start, as ExaBGP can

    def __init__(self, cfg: config.BgpConfig) -> None:
        self.config = cfg
        self.running = False
        self.busy = False
        self.history: list[dict[Any, Any]] = []
        self.announced: dict[Any, Any] = {}
        self.rejected: dict[Any, Any] = {}
        self.end_of_rib_at: dict[Any, Any] | None = None  # the routes announced when end_of_rib() was first called
        self.stopped_withdrawing: bool | None = None
        FakeSpeaker.instances.append(self)

    async def start(self) -> None:
        await asyncio.sleep(0.05)  # a real start awaits: another reload could slip in here
        if FakeSpeaker.fail_with in {str(peer.address) for peer in self.config.peers}:
            raise OSError("ExaBGP did not start: exited with status 1")
        assert not any(other.running for other in FakeSpeaker.instances), "two speakers at once"
        self.running = True

    async def reconfigure(self, new: config.BgpConfig) -> list[str]:
        assert not self.busy, "two reconfigurations at once"
        self.busy = True
        try:
            await asyncio.sleep(0.05)  # a real one awaits ExaBGP: another reload could slip in here
            if FakeSpeaker.fail_with in {str(peer.address) for peer in new.peers}:
                raise bgp.ReconfigureError("ExaBGP refused the new configuration", [])
            added = {str(p.address) for p in new.peers} - {str(p.address) for p in self.config.peers}
            self.config = new
            return [f"peer {address} added" for address in sorted(added)]
        finally:
            self.busy = False

    async def stop(self, *, withdraw: bool = True) -> None:
        await asyncio.sleep(0.05)
        self.stopped_withdrawing = withdraw
        if withdraw:
            self.announced = {}
        self.running = False

    def end_of_rib(self) -> None:
        self.end_of_rib_at = dict(self.announced) if self.end_of_rib_at is None else self.end_of_rib_at

    def set_routes(self, routes: Any) -> None:
        self.announced = dict(routes)
        self.history.append(dict(routes))

    def pending(self) -> frozenset[Any]:
        return frozenset()

    def peers(self) -> dict[Any, Any]:
        return {}


# The daemon's factories name the real classes; the fakes have the part of them it uses and stand in for them.
speaker_factory = cast(Callable[[config.BgpConfig], bgp.Speaker], FakeSpeaker)
neighbour_factory = cast(Callable[..., neighbours.NeighbourWatcher], ResolvedNeighbours)


def fake_daemon(
    path: Path,
    plane_factory: Callable[[Any], Any],
    *,
    start_grace: float = 5.0,
    drain_seconds: float = 0.0,
    neighbours: Callable[..., Any] | None = None,
) -> daemon.Daemon:
    """The real daemon around the fakes: ``plane_factory``'s data plane, a fresh ``FakeSpeaker``, neighbours all
    resolved (or ``neighbours``' watcher), one checker process, no link watcher."""
    FakeSpeaker.instances, FakeSpeaker.fail_with = [], None
    return daemon.Daemon(
        path,
        start_grace=start_grace,
        drain_seconds=drain_seconds,
        speaker_factory=speaker_factory,
        plane_factory=plane_factory,
        neighbour_factory=neighbours or neighbour_factory,
        check_workers=1,
        link_factory=None,
    )


@pytest.fixture
async def listener() -> AsyncIterator[int]:
    """A TCP port on 127.0.0.1 that accepts: what the TCP checks connect to."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


@pytest.fixture
async def running(tmp_path: Path, listener: int) -> AsyncIterator[tuple[daemon.Daemon, FakeDataPlane, Path]]:
    path = tmp_path / "lb.yaml"
    path.write_text(document(port=listener))
    planes: list[FakeDataPlane] = []

    def plane_factory(settings: Any) -> Any:
        planes.append(FakeDataPlane(settings=settings))
        return planes[-1]

    d = fake_daemon(path, plane_factory)
    task = asyncio.create_task(d.run(handle_signals=False))
    async with asyncio.timeout(20):
        await d.ready_event.wait()
        while not _announced(d):
            await asyncio.sleep(0.05)
    yield d, planes[0], path
    d.stop_trigger.set()
    await asyncio.wait_for(task, 20)


def _announced(d: daemon.Daemon) -> dict[Any, Any]:
    speaker = FakeSpeaker.instances[-1] if FakeSpeaker.instances else None
    return speaker.announced if speaker is not None and speaker.running else {}


def _backend_keys(d: daemon.Daemon) -> set[str]:
    return set(d._members)


async def test_a_failed_attach_changes_nothing_and_is_counted(running: Any, listener: int) -> None:
    d, plane, path = running
    digest = d.running_config.digest()
    plane.fail_attach.add("eth-missing")
    path.write_text(document(port=listener, interfaces="[lo, eth-missing]", extra_service=True))
    result = await d.reload()
    assert not result.ok and "attaching XDP to eth-missing failed" in result.message
    assert d.running_config.digest() == digest
    assert plane.attached == {"lo": "generic"}
    assert _backend_keys(d) == {"web/127.0.0.1"}, "the new config's checks must not run"
    snap = d.snapshot()
    assert snap.reloads == {"success": 0, "failure": 1} and "eth-missing" in (snap.last_reload_error or "")


async def test_a_changed_interface_that_fails_is_put_back(running: Any, listener: int) -> None:
    d, plane, path = running
    path.write_text(document(port=listener, interfaces="[{name: lo, mode: native}, eth-missing]"))
    plane.fail_attach.add("eth-missing")
    result = await d.reload()
    assert not result.ok
    assert plane.attached == {"lo": "generic"}, "lo was re-attached in native mode, then put back"
    assert plane.interface_log[-2:] == [("detach", "lo"), ("attach", "lo")]


async def test_a_refused_bgp_change_leaves_the_sessions_and_the_rest_as_they_were(running: Any, listener: int) -> None:
    d, _, path = running
    speaker = FakeSpeaker.instances[-1]
    path.write_text(document(port=listener, peers="192.0.2.1 192.0.2.2", extra_service=True))
    FakeSpeaker.fail_with = "192.0.2.2"
    result = await d.reload()
    assert not result.ok and "ExaBGP refused" in result.message
    assert FakeSpeaker.instances == [speaker] and speaker.running, (
        "the running speaker was neither stopped nor replaced"
    )
    assert [str(p.address) for p in speaker.config.peers] == ["192.0.2.1"]
    assert _backend_keys(d) == {"web/127.0.0.1"}, "the new service's checks must not run"
    assert _announced(d) and d.snapshot().last_reload_error is not None


async def test_a_peer_added_reconfigures_in_place(running: Any, listener: int) -> None:
    d, _, path = running
    speaker = FakeSpeaker.instances[-1]
    path.write_text(document(port=listener, peers="192.0.2.1 192.0.2.2"))
    result = await d.reload()
    assert result.ok and "bgp peer 192.0.2.2 added" in result.message, result.message
    assert FakeSpeaker.instances == [speaker] and speaker.running
    assert [str(p.address) for p in speaker.config.peers] == ["192.0.2.1", "192.0.2.2"]


async def test_when_a_later_step_fails_the_bgp_change_is_undone(running: Any, listener: int) -> None:
    d, plane, path = running
    speaker = FakeSpeaker.instances[-1]

    def refuse(*targets: Any) -> None:
        raise healthchecks.HealthCheckConfigError("checks refused")

    d._scheduler.update = d._scheduler.change = refuse
    path.write_text(document(port=listener, peers="192.0.2.1 192.0.2.2", extra_service=True))
    result = await d.reload()
    assert not result.ok and "checks refused" in result.message
    assert [str(p.address) for p in speaker.config.peers] == ["192.0.2.1"], "the new peer was taken back"


async def test_a_route_attribute_change_re_announces_in_place(running: Any, listener: int) -> None:
    d, _, path = running
    speaker = FakeSpeaker.instances[-1]
    before = len(speaker.history)
    path.write_text(document(port=listener, med=99))
    result = await d.reload()
    assert result.ok, result.message
    await asyncio.sleep(0.3)
    assert FakeSpeaker.instances[-1] is speaker and speaker.running, "the sessions were not touched"
    assert [attributes.med for attributes in speaker.announced.values()] == [99]
    assert all(routes for routes in speaker.history[before:]), "never withdrawn on the way"


async def test_concurrent_reloads_run_one_at_a_time(running: Any, listener: int) -> None:
    d, _, path = running
    path.write_text(document(port=listener, peers="192.0.2.1 192.0.2.2"))
    first, second = await asyncio.gather(d.reload(), d.reload())  # FakeSpeaker.reconfigure asserts one at a time
    assert first.ok and second.ok, (first.message, second.message)
    assert "peer 192.0.2.2 added" in first.message and "no change" in second.message


async def test_a_bug_in_a_step_is_a_refusal_not_an_exception(running: Any, listener: int) -> None:
    d, plane, path = running

    def broken(ifname: str, mode: str = "auto") -> str:
        raise RuntimeError("a bug")

    plane.attach = broken
    path.write_text(document(port=listener, interfaces="[lo, eth-other]"))
    result = await d.reload()
    assert not result.ok and result.message.endswith("internal error: RuntimeError")
    assert d.snapshot().reloads["failure"] == 1


def test_the_fake_plane_refuses_like_the_kernel_does() -> None:
    plane = FakeDataPlane()
    plane.fail_attach.add("x")
    with pytest.raises(Exception, match="attaching XDP to x failed"):
        plane.attach("x")


async def test_an_added_interface_counts_for_neighbours(running: Any, listener: int) -> None:
    d, plane, path = running
    path.write_text(document(port=listener, interfaces="[lo, eth-extra]"))
    result = await d.reload()
    assert result.ok, result.message
    assert set(plane.attached) == {"lo", "eth-extra"}
    assert d._neighbours.interfaces == set(plane.attached_ifindexes.values())


async def test_removing_or_adding_bgp_is_undone_when_a_later_step_fails(running: Any, listener: int) -> None:
    d, _, path = running

    def refuse(*targets: Any) -> None:
        raise healthchecks.HealthCheckConfigError("checks refused")

    change = d._scheduler.change
    d._scheduler.change = refuse
    path.write_text(document(port=listener, with_bgp=False, extra_service=True))
    assert not (await d.reload()).ok
    assert d._speaker is not None and d._speaker.running, "the removed speaker is back"
    assert d.running_config.bgp is not None

    d._scheduler.change = change
    assert (await d.reload()).ok and d._speaker is None
    d._scheduler.change = refuse
    path.write_text(document(port=listener))
    assert not (await d.reload()).ok
    assert d._speaker is None and d.running_config.bgp is None
    assert not any(speaker.running for speaker in FakeSpeaker.instances), "the added speaker was stopped"


async def test_a_reload_reads_only_the_services_that_changed(running: Any, listener: int) -> None:
    d, _, path = running
    path.write_text(document(port=listener, extra_service=True))
    assert (await d.reload()).ok
    web, api = d.running_config.services
    path.write_text(document(port=listener, extra_service=True).replace("vip: 192.0.2.101", "vip: 192.0.2.102"))
    assert (await d.reload()).ok
    assert d.running_config.services[0] is web, "an unchanged service is kept, not read again"
    assert d.running_config.services[1] is not api and str(d.running_config.services[1].vips[0]) == "192.0.2.102"
    path.write_text("interfaces: [lo]\nservices:\n  - vip: 192.0.2.1\n    port: x\n")
    result = await d.reload()
    assert not result.ok and "services[0].port" in result.message and "(line 4)" in result.message
    assert d.running_config.services[0] is web


def _followed_in_full(d: daemon.Daemon) -> None:
    """The daemon's view of the checked set, kept by changes, equals the one made from its config in full."""
    cfg = d.running_config
    targets = desired.health_targets(cfg, d._overrides)
    assert d._members == {
        key: (service.name, backend.address_text, tuple(check.type for check in checks))
        for key, (service, backend, checks) in targets.items()
    }
    running = {key: target for shard in d._scheduler._shards for key, target in shard.targets.items()}  # type: ignore[union-attr]
    assert running == {target.key: target for target in daemon._targets(targets, d._overrides, {})}
    services_of: dict[Any, set[str]] = {}
    for service, backend in cfg.backends():
        services_of.setdefault(backend.address, set()).add(service.name)
    assert d._services_of == services_of
    assert set(d._health) == set(targets) and d._unknown <= set(targets)


SERVICE = """\
  - name: {name}
    vip: {vip}
    port: {port}
    {checks}
    backends: [{backends}]
"""


async def test_reloads_that_change_some_services_leave_the_state_of_a_full_update(running: Any, listener: int) -> None:
    d, _, path = running
    check = "checks: [" + CHECK_PORT_CONFIG % listener + "]"
    web = SERVICE.format(name="web", vip="192.0.2.100", port=80, checks=check, backends="127.0.0.1")
    steps = [
        web + SERVICE.format(name="api", vip="192.0.2.101", port=80, checks=check, backends="127.0.0.2, 127.0.0.3"),
        web + SERVICE.format(name="api", vip="192.0.2.101", port=81, checks=check, backends="127.0.0.3, 127.0.0.4"),
        web + SERVICE.format(name="api2", vip="192.0.2.101", port=81, checks=check, backends="127.0.0.1, 127.0.0.4"),
        web + SERVICE.format(name="api2", vip="192.0.2.101", port=81, checks="policy: p", backends="127.0.0.4"),
        web + SERVICE.format(name="api2", vip="192.0.2.101", port=81, checks="policy: p", backends="127.0.0.4"),
        web.replace(check, "policy: p")
        + SERVICE.format(
            name="x", vip="192.0.2.9", port=9, checks="checks: []", backends="{address: 127.0.0.5, interface: lo}"
        ),
        web,
    ]
    for index, services in enumerate(steps):
        text = f"interfaces: [lo]\npolicies:\n  p: {{checks: [{CHECK_PORT_CONFIG % listener}]}}\nservices:\n{services}"
        if index == 4:  # only the policy changes: the services that use it check otherwise
            text = text.replace(
                "p: {checks: [{type: tcp, port: %d, timing: {interval: 0.2" % listener,
                "p: {checks: [{type: tcp, port: %d, timing: {interval: 0.3" % listener,
            )
        path.write_text(text)
        result = await d.reload()
        assert result.ok, (index, result.message)
        _followed_in_full(d)
    await d.set_admin("web/127.0.0.1", config.AdminState.DISABLED)
    _followed_in_full(d)


async def test_an_admin_change_reaches_the_data_plane_when_the_service_name_has_a_slash(
    running: Any, listener: int
) -> None:
    d, plane, path = running
    text = document(port=listener).replace("  - name: web\n", "  - name: web/v2\n")
    path.write_text(text)
    assert (await d.reload()).ok
    async with asyncio.timeout(10):
        while d.snapshot().services[0].backends[0].health != "up":
            await asyncio.sleep(0.05)
    await d.set_admin("web/v2/127.0.0.1", config.AdminState.DRAINED)
    assert [b.weight for s in plane.services.values() for b in s.backends] == [0], "drained: weight 0 at once"
    with pytest.raises(KeyError):
        await d.set_admin("web/127.0.0.1", config.AdminState.DRAINED)


async def test_a_reload_drops_the_metric_series_of_the_backends_it_removes(running: Any, listener: int) -> None:
    d, _, path = running
    collected = faces.attach(d, serve_api=False)  # the daemon tells its observers from now on
    path.write_text(document(port=listener, extra_service=True))
    assert (await d.reload()).ok
    failures = 'xdplb_healthcheck_failures_total{backend="127.0.0.2",check="tcp",service="api"}'
    async with asyncio.timeout(10):  # nothing listens on 127.0.0.2: its checks fail
        while failures not in collected.render().decode():
            await asyncio.sleep(0.1)
    path.write_text(document(port=listener))
    assert (await d.reload()).ok
    text = collected.render().decode()
    assert 'backend="127.0.0.2"' not in text and 'backend="127.0.0.1"' in text


async def test_a_snapshot_reads_the_kernels_counters_in_the_assembling_thread_not_on_the_loop(
    running: Any, listener: int
) -> None:
    import threading

    d, plane, _ = running
    readers: list[int] = []

    def noting_the_thread(read: Callable[[], object]) -> Callable[[], object]:
        def noted() -> object:
            readers.append(threading.get_ident())
            return read()

        return noted

    plane.read_counters = noting_the_thread(plane.read_counters)
    plane.flow_table_entries = noting_the_thread(plane.flow_table_entries)
    assemble = d.snapshot_builder()
    assert readers == [], "read while gathering, on the loop"
    snapshot = await asyncio.to_thread(assemble)
    assert len(readers) == 2 and threading.get_ident() not in readers
    assert snapshot.services and snapshot.flow_table_entries == {"ipv4": 0, "ipv6": 0}


async def test_a_reload_adds_a_tunnelled_service_and_applies_the_tunnel_settings(running: Any, listener: int) -> None:
    """Tunnel sources are written to a map, so a reload applies them before the pass that needs them; the routed
    backend goes into the data plane with no MAC, and its address is not watched as a neighbour."""
    d, plane, path = running
    text = (
        document(port=listener)
        + """\
  - name: routed
    vip: 192.0.2.101
    port: 80
    forwarding: gue
    checks: []
    backends: [198.18.5.20]
dataplane: {tunnel_source_v4: 198.18.0.1, gue_port: 7000}
"""
    )
    path.write_text(text)
    result = await d.reload()
    assert result.ok, result.message
    assert "dataplane tunnel settings applied" in result.message and "restart" not in result.message
    assert plane.tunnel == (config.parse_config(text, source="x").dataplane.tunnel_source_v4, None, 7000)
    key = next(k for k in plane.services if str(k.vip) == "192.0.2.101")
    (backend,) = plane._specs[key].backends
    assert (backend.tunnel, backend.mac) == ("gue", None)
    assert plane.services[key].backends[0].state.value == "active"
    watched = {str(address) for address in d._neighbours.watched}
    assert "198.18.5.20" not in watched and "127.0.0.1" in watched

    # Back without it: the source goes only once the routed service is out of the maps.
    path.write_text(document(port=listener))
    result = await d.reload()
    assert result.ok, result.message
    assert plane.tunnel == (None, None, 6080)
    ((settings, services_then),) = plane.tunnel_log[-1:]
    assert key not in services_then
    assert all(entry[0][0] is not None for entry in plane.tunnel_log[1:-1]), plane.tunnel_log


async def test_tunnelled_backends_are_probed_when_frames_found_no_next_hop(running: Any, listener: int) -> None:
    """A datagram to a routed backend makes the kernel resolve the route's gateway: sent when the data plane counts
    drops for want of a next hop, which happen when no health check keeps that gateway resolved."""
    d, plane, path = running
    path.write_text(
        document(port=listener)
        + """\
  - name: routed
    vip: 192.0.2.101
    port: 80
    forwarding: ipip
    checks: []
    backends: [198.18.5.20]
dataplane: {tunnel_source_v4: 198.18.0.1}
"""
    )
    assert (await d.reload()).ok
    probed = d._neighbours.probed
    await asyncio.sleep(2.5 * daemon.PROBE_INTERVAL)
    assert "198.18.5.20" not in {str(a) for a in probed}, "no drops: no probe"
    plane.totals = bpf.GlobalCounters(drop_no_route=3)
    await asyncio.sleep(2.5 * daemon.PROBE_INTERVAL)
    assert "198.18.5.20" in {str(a) for a in probed}


def _running_targets(d: daemon.Daemon) -> dict[str, healthchecks.Target]:
    return {key: target for shard in d._scheduler._shards for key, target in shard.targets.items()}  # type: ignore[union-attr]


THROUGH_DATA_PATH = """\
  - name: routed
    vip: 192.0.2.101
    port: 80
    forwarding: gue
    checks: [{type: tcp, via: dataplane, timing: {interval: 5, timeout: 1}}]
    backends: [198.18.5.20, {address: 198.18.5.21, forwarding: l2}]
dataplane: {tunnel_source_v4: 198.18.0.1}
"""


async def test_checks_through_the_data_path_get_a_path_each_and_lose_it_when_they_go(
    running: Any, listener: int
) -> None:
    """Each backend checked ``via: dataplane`` gets a path in the data plane (its VIP and forwarding) before its
    checker runs, and a socket mark naming it; a reload that keeps the backend keeps its path, and one that takes the
    backend or the option away frees it."""
    d, plane, path = running
    assert plane.check_paths is None, "not loaded while no check needs it"
    assert d.snapshot().check_paths == {}
    path.write_text(document(port=listener) + THROUGH_DATA_PATH)
    result = await d.reload()
    assert result.ok, result.message
    assert plane.check_paths is not None
    # mypy keeps check_paths at the None asserted before the reload: it takes the rest for unreachable
    assert d.snapshot().check_paths == dict.fromkeys(("sent", "tunnelled", "replies", "unknown", "refused"), 0)  # type: ignore[unreachable]
    vip = ipaddress.ip_address("192.0.2.101")
    by_backend = {
        str(backend): (path_id, str(v), tunnel) for path_id, (v, backend, tunnel) in plane.check_paths.items()
    }
    assert {b: (v, t) for b, (_, v, t) in by_backend.items()} == {
        "198.18.5.20": ("192.0.2.101", "gue"),
        "198.18.5.21": ("192.0.2.101", None),
    }
    targets = _running_targets(d)
    for address, (path_id, _, _) in by_backend.items():
        via = targets[f"routed/{address}"].via
        assert via == healthchecks.ViaDataPlane(bpf.check_mark(path_id), vip)
    assert targets["web/127.0.0.1"].via is None

    path.write_text(document(port=listener, med=20) + THROUGH_DATA_PATH)  # nothing of theirs changes
    assert (await d.reload()).ok
    assert {str(b): i for i, (_, b, _) in plane.check_paths.items()} == {b: i for b, (i, _, _) in by_backend.items()}

    path.write_text(
        document(port=listener)
        + THROUGH_DATA_PATH.replace(", {address: 198.18.5.21, forwarding: l2}", "").replace(
            "via: dataplane", "via: direct"
        )
    )
    assert (await d.reload()).ok
    assert plane.check_paths == {} and _running_targets(d)["routed/198.18.5.20"].via is None
    assert sorted(d._free_path_ids)[:2] == [0, 1]


async def test_a_reload_whose_check_paths_cannot_load_is_refused_whole(running: Any, listener: int) -> None:
    d, plane, path = running
    digest = d.running_config.digest()
    plane.fail_check_paths = True
    path.write_text(document(port=listener) + THROUGH_DATA_PATH)
    result = await d.reload()
    assert not result.ok and "loading the check path programs failed" in result.message
    assert d.running_config.digest() == digest and plane.check_paths is None
    assert _backend_keys(d) == {"web/127.0.0.1"}, "the new config's checks must not run"
    assert plane.tunnel[0] is None, "the tunnel source it brought is undone"


def test_backends_checked_through_the_data_path_whose_route_leaves_elsewhere_are_named() -> None:
    cfg = config.parse_config(document(port=80) + THROUGH_DATA_PATH, source="x")
    routes = {"198.18.5.20": 3, "198.18.5.21": 9}
    assert daemon.check_routes_elsewhere(cfg, {3}, routes.get) == [("198.18.5.21", 9)]
    assert daemon.check_routes_elsewhere(cfg, {3, 9}, routes.get) == []
    assert daemon.check_routes_elsewhere(config.parse_config(document(port=80), source="x"), set(), routes.get) == []


async def test_the_faces_serve_once_the_core_has_started_and_stop_before_it(tmp_path: Path, listener: int) -> None:
    """What `xdplb run` composes: the metrics observe the daemon and the HTTP API serves it on the running config's
    address, made only once the config is loaded, and closed at the stop."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        api_port = probe.getsockname()[1]
    path = tmp_path / "lb.yaml"
    path.write_text(document(port=listener) + f'api: {{listen: "127.0.0.1:{api_port}"}}\n')
    d = fake_daemon(path, lambda settings: FakeDataPlane(settings=settings))
    faces.attach(d)
    task = asyncio.create_task(d.run(handle_signals=False))
    try:
        async with asyncio.timeout(20):
            await d.ready_event.wait()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{api_port}/healthz") as response:
                assert (response.status, await response.text()) == (200, "ok\n")
            async with asyncio.timeout(10):  # the first check run reaches the metrics the daemon told
                while True:
                    async with http.get(f"http://127.0.0.1:{api_port}/metrics") as response:
                        if (
                            'xdplb_healthcheck_duration_seconds_count{check="tcp",service="web"}'
                            in await response.text()
                        ):
                            break
                    await asyncio.sleep(0.2)
    finally:
        d.stop_trigger.set()
        await asyncio.wait_for(task, 20)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", api_port), timeout=2):
        pass  # closed with the daemon


class _BrokenObserver:
    """A face that fails at every event it is told."""

    def __init__(self) -> None:
        self.calls = 0

    def _fail(self, *args: object) -> None:
        self.calls += 1
        raise RuntimeError("a broken face")

    observe_check = observe_schedule_lag = health_transition = forget = _fail


async def test_an_observer_that_fails_changes_nothing_else(tmp_path: Path, listener: int) -> None:
    """The core goes on (verdicts reconciled, the route announced) and the next observer still hears everything."""
    path = tmp_path / "lb.yaml"
    path.write_text(document(port=listener))
    d = fake_daemon(path, lambda settings: FakeDataPlane(settings=settings))
    broken = _BrokenObserver()
    d.observers.append(broken)
    collected = faces.attach(d, serve_api=False)
    task = asyncio.create_task(d.run(handle_signals=False))
    try:
        async with asyncio.timeout(20):
            await d.ready_event.wait()
            while not _announced(d):
                await asyncio.sleep(0.05)
        assert broken.calls > 0 and not task.done()
        assert 'xdplb_backend_state_transitions_total{backend="127.0.0.1",service="web",state="up"} 1' in (
            collected.render().decode()
        ), "the metrics, after the broken observer, still heard the transition"
    finally:
        d.stop_trigger.set()
        await asyncio.wait_for(task, 20)
