"""The reconciler on a data plane in memory: work in proportion to the change, one pass at a time, errors counted
and retried, Maglev tables built off the loop."""

import asyncio
import ipaddress
from array import array

import pytest

import bpf
import config
from balancer import desired, reconciler
from tests.balancer.fake_plane import FakeDataPlane

MAC = "02:00:00:00:00:01"


def cfg(services: int, backends: int = 3, table_size: int = 251) -> config.XdplbConfig:
    lines = ["interfaces: [eth0]", "services:"]
    for i in range(services):
        addresses = ", ".join(f"198.18.{i}.{10 + j}" for j in range(backends))
        lines.append(
            f"  - {{name: s{i}, vip: 192.0.2.{10 + i}, port: 80, checks: [], table_size: {table_size}, "
            f"backends: [{addresses}]}}"
        )
    return config.parse_config("\n".join(lines) + "\n", source="test.yaml")


def macs(c: config.XdplbConfig) -> dict[config.IpAddress, str | None]:
    return {backend.address: MAC for _, backend in c.backends()}


def key(i: int) -> bpf.ServiceKey:
    return bpf.ServiceKey(ipaddress.ip_address(f"192.0.2.{10 + i}"), 80, "tcp")


async def converge(r: reconciler.Reconciler, c: config.XdplbConfig, **options: object) -> set[str]:
    health: dict[str, desired.Health] = options.pop("health", {})  # type: ignore[assignment]
    mac_map: dict[config.IpAddress, str | None] = options.pop("macs", macs(c))  # type: ignore[assignment]
    return await r.converge(c, health, {}, mac_map, ready=True, **options)  # type: ignore[arg-type]


def test_a_pass_writes_only_the_services_that_changed() -> None:
    async def main() -> None:
        plane, c = FakeDataPlane(), cfg(5)
        r = reconciler.Reconciler(plane, None)  # type: ignore[arg-type]
        await converge(r, c)
        assert sorted(plane.writes) == [key(i) for i in range(5)]
        plane.writes.clear()
        await converge(r, c)
        assert plane.writes == [], "a full pass with nothing changed writes nothing"
        health = {"s2/198.18.2.10": desired.Health("down", "timeout", 0.0)}
        await converge(r, c, health=health, changed={"s2"})
        assert plane.writes == [key(2)]
        assert [str(b.address) for b in plane.services[key(2)].backends] == ["198.18.2.11", "198.18.2.12"]

    asyncio.run(main())


def test_a_big_pass_reserves_each_chunks_tables_at_once_and_programs_every_service() -> None:
    async def main() -> None:
        plane, c = FakeDataPlane(max_services=200), cfg(150)
        r = reconciler.Reconciler(plane, None)  # type: ignore[arg-type]
        await converge(r, c)
        assert sorted(plane.writes) == sorted(key(i) for i in range(150))
        assert plane.reserved == [64, 64, 22], "one reservation per chunk, before its writes"

    asyncio.run(main())


def test_the_prebuild_makes_the_tables_the_first_all_up_pass_needs_drains_included(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        plane, c = FakeDataPlane(), cfg(3)
        drained = {"s1/198.18.1.10": config.AdminState.DRAINED}  # a drain from the state file, not the config
        r = reconciler.Reconciler(plane, None)  # type: ignore[arg-type]
        await r.prebuild(c, drained)
        built: list[object] = []
        build = bpf.maglev.build

        def noted_build(key: bpf.maglev.TableKey) -> "array[int]":
            built.append(key)
            return build(key)

        monkeypatch.setattr(bpf.maglev, "build", noted_build)
        await r.converge(c, {}, drained, macs(c), ready=True)
        assert sorted(plane.writes) == [key(i) for i in range(3)]
        assert built == [], "every table the pass wanted was already built"

    asyncio.run(main())


def test_a_failed_update_is_counted_reported_retried_and_does_not_stop_the_others() -> None:
    async def main() -> None:
        plane, c = FakeDataPlane(), cfg(3)
        plane.fail = {key(1)}
        r = reconciler.Reconciler(plane, None)  # type: ignore[arg-type]
        assert await converge(r, c) == {"s1"}
        assert r.dataplane_errors == 1 and "out of memory" in r.errors[str(key(1))]
        assert set(plane.services) == {key(0), key(2)}, "the other services are programmed"
        vip = r.routes[ipaddress.ip_network("192.0.2.11/32")]
        assert not vip.announce and "0 of 1" in vip.reason, "a service the data plane lacks is not announced"
        plane.fail.clear()
        assert await converge(r, c, changed={"s1"}) == set()
        assert key(1) in plane.services and str(key(1)) not in r.errors
        assert r.routes[ipaddress.ip_network("192.0.2.11/32")].announce

    asyncio.run(main())


def test_settling_services_wait_and_unresolved_backends_take_no_flows() -> None:
    async def main() -> None:
        plane, c = FakeDataPlane(), cfg(2)
        r = reconciler.Reconciler(plane, None)  # type: ignore[arg-type]
        unresolved = macs(c) | {ipaddress.ip_address("198.18.1.10"): None}
        await converge(r, c, settling={"s0"}, macs=unresolved)
        assert key(0) not in plane.services, "no verdicts yet: not programmed"
        reasons = [b.reason for b in plane.services[key(1)].backends]
        assert reasons == ["no MAC (neighbour unresolved)", "active", "active"]
        assert plane.services[key(1)].backends[0].table_entries == 0

    asyncio.run(main())


def test_one_pass_at_a_time_so_an_older_pass_never_overwrites_a_newer_one() -> None:
    async def main() -> None:
        plane, c = FakeDataPlane(), cfg(12, table_size=16381)
        r = reconciler.Reconciler(plane, None)  # type: ignore[arg-type]
        all_down = {
            f"s{i}/198.18.{i}.{10 + j}": desired.Health("down", "timeout", 0.0) for i in range(12) for j in range(3)
        }
        older = asyncio.create_task(converge(r, c))  # waits for 12 large tables from a worker thread
        await asyncio.sleep(0)
        await converge(r, c, health=all_down)  # needs no table: without the lock it would finish first
        await older
        assert r.passes == 2
        assert [len(s.backends) for s in plane.services.values()] == [0] * 12, "the newer pass's state stands"

    asyncio.run(main())


@pytest.mark.privileged
def test_the_fake_reports_what_the_real_data_plane_reports() -> None:
    from tests.bpf import world
    from tests.bpf.conftest import require_bpf

    require_bpf()
    services = [
        world.service(world.VIP4, 80, "tcp", world.B1.backend(weight=2), world.B2.backend(weight=0)),
        world.service(world.VIP4, 81, "tcp", bpf.Backend(ipaddress.ip_address("198.18.0.99")), world.B2.backend()),
    ]
    real, fake = bpf.DataPlane(world.SETTINGS), FakeDataPlane()
    real.setup()
    try:
        for service in services:
            assert real.needs_update(service) and fake.needs_update(service)
            got_real, got_fake = real.set_service(service), fake.set_service(service)
            assert not real.needs_update(service) and not fake.needs_update(service)

            def comparable(status: bpf.ServiceStatus) -> tuple[object, ...]:
                return (
                    status.key,
                    status.table_size,
                    [(b.address, b.weight, b.mac, b.table_entries, b.reason) for b in status.backends],
                )

            assert comparable(got_real) == comparable(got_fake)
            assert real.table_key(service) == fake.table_key(service)
        real.remove_service(services[0].key)
        fake.remove_service(services[0].key)
        assert set(real.services) == set(fake.services) == {services[1].key}
    finally:
        real.cleanup()


def test_the_daemon_names_the_sysctls_when_backends_outnumber_the_neighbour_table(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from balancer import daemon, neighbours

    # the host's thresholds are shared by every namespace here: read, never changed, so stand in for them
    monkeypatch.setattr(neighbours, "neighbour_table_limits", lambda family: {"gc_thresh3": 8})
    caplog.set_level("WARNING")
    daemon._warn_about_neighbour_limits(cfg(2, backends=3))  # noqa: SLF001 - 6 IPv4 backends, room for 4
    assert "event=neighbour_table_too_small family=ipv4 backends=6 gc_thresh3=8" in caplog.text
    assert "raise=net.ipv4.neigh.default.gc_thresh1,gc_thresh2,gc_thresh3" in caplog.text
    caplog.clear()
    daemon._warn_about_neighbour_limits(cfg(1, backends=3))  # noqa: SLF001
    assert caplog.text == ""


def test_a_full_pass_lets_the_loop_run_between_slices_of_services() -> None:
    async def main() -> None:
        plane, c = FakeDataPlane(max_services=256), cfg(240)
        r = reconciler.Reconciler(plane, None)  # type: ignore[arg-type]
        await converge(r, c)
        compared = 0
        needs_update = plane.needs_update

        def counting(service: bpf.Service) -> bool:
            nonlocal compared
            compared += 1
            return needs_update(service)

        plane.needs_update = counting  # type: ignore[method-assign]
        seen = []
        task = asyncio.create_task(converge(r, c))  # a full pass that finds nothing to write
        while not task.done():
            seen.append(compared)
            await asyncio.sleep(0)
        assert compared == 240 and not plane.writes[240:], "compared every service, wrote none"
        assert any(0 < count < 240 for count in seen), f"the loop never ran during the pass: {seen}"

    asyncio.run(main())
