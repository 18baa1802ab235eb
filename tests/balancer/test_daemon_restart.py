"""Restarts with the fake data plane: a restart stop leaves XDP attached, and a start over an earlier run's program
lets it forward until every first verdict is in, then swaps this run's program in (the lab version with real
traffic is ``test_daemon_restart_netns.py``)."""

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

import bpf
from balancer import daemon
from tests.balancer.fake_plane import FakeDataPlane
from tests.balancer.test_daemon_reload import FakeSpeaker, document, fake_daemon, listener

__all__ = ["listener"]  # the fixture, used by name


class _RecordingPlane(FakeDataPlane):
    """Notes, when the program is attached, whether the daemon then had every first verdict and wrote services."""

    owner: daemon.Daemon | None = None

    def __init__(self, settings: Any) -> None:
        super().__init__(settings=settings)
        self.at_attach: list[tuple[bool, int]] = []

    def attach(self, ifname: str, mode: str = "auto") -> str:
        assert self.owner is not None
        self.at_attach.append((self.owner._settled.is_set(), len(self.writes)))
        return super().attach(ifname, mode)


async def _run(path: Path, earlier: dict[str, str]) -> tuple[daemon.Daemon, _RecordingPlane, asyncio.Task[None]]:
    planes: list[_RecordingPlane] = []

    def plane_factory(settings: Any) -> Any:
        plane = _RecordingPlane(settings)
        plane.earlier = dict(earlier)
        plane.owner = d
        planes.append(plane)
        return plane

    d = fake_daemon(path, plane_factory, drain_seconds=0.5)
    task = asyncio.create_task(d.run(handle_signals=False))
    async with asyncio.timeout(20):
        await d.ready_event.wait()
    return d, planes[0], task


async def test_a_start_over_an_earlier_program_swaps_in_only_once_every_verdict_is_in(
    tmp_path: Path, listener: int
) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(document(port=listener))
    d, plane, task = await _run(path, {"lo": "native"})
    try:
        assert plane.interface_log[0] == ("prepare", "lo")
        assert plane.at_attach == [(True, 1)], "attached before the verdicts and the service write"
        assert plane.attached == {"lo": "native"}, "in the earlier program's mode: one atomic swap"
        assert plane.earlier == {}
    finally:
        d.stop_trigger.set()
        await asyncio.wait_for(task, 20)
    assert plane.interface_log[-1] == ("detach", "lo")


async def test_a_fresh_start_attaches_at_once(tmp_path: Path, listener: int) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(document(port=listener))
    d, plane, task = await _run(path, {})
    d.stop_trigger.set()
    await asyncio.wait_for(task, 20)
    assert plane.at_attach[0] == (False, 0) and plane.interface_log[0] == ("attach", "lo")


async def test_a_restart_stop_leaves_xdp_attached_and_skips_the_drain(tmp_path: Path, listener: int) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(document(port=listener))
    d, plane, task = await _run(path, {})
    started = asyncio.get_running_loop().time()
    d.restart_stop()
    await asyncio.wait_for(task, 20)
    assert plane.left_attached == {"lo": "generic"}
    assert ("detach", "lo") not in plane.interface_log
    assert not FakeSpeaker.instances[-1].running, "the speaker stops"
    assert asyncio.get_running_loop().time() - started < 0.5 + 0.4, "no drain wait: XDP keeps forwarding"


async def test_a_full_stop_before_the_takeover_removes_the_earlier_program(tmp_path: Path, listener: int) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(
        document(port=listener) + "  - {name: never, vip: 192.0.2.102, port: 80, backends: [127.0.0.3], "
        "checks: [{type: tcp, port: 9, timing: {interval: 60, timeout: 1}}]}\n"
    )
    d = fake_daemon(path, lambda settings: _earlier_plane(settings), start_grace=30.0)
    task = asyncio.create_task(d.run(handle_signals=False))
    await asyncio.sleep(1.0)  # set up, waiting for a verdict that takes a minute
    assert not d.ready
    d.stop_trigger.set()
    await asyncio.wait_for(task, 20)
    assert ("release", "lo") in _EARLIER[-1].interface_log and ("attach", "lo") not in _EARLIER[-1].interface_log


_EARLIER: list[FakeDataPlane] = []


def _earlier_plane(settings: bpf.DataPlaneSettings) -> bpf.DataPlane:
    plane = FakeDataPlane(settings=settings)
    plane.earlier = {"lo": "generic"}
    _EARLIER.append(plane)
    return cast(bpf.DataPlane, plane)  # the fake stands in for the real one


async def test_end_of_rib_follows_the_first_routes_and_a_restart_stop_leaves_them_under_graceful_restart(
    tmp_path: Path, listener: int
) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(
        document(port=listener).replace("  attributes:", "  graceful_restart: {restart_time: 30}\n  attributes:")
    )
    d, _, task = await _run(path, {})
    speaker = FakeSpeaker.instances[-1]
    async with asyncio.timeout(10):
        while speaker.end_of_rib_at is None:
            await asyncio.sleep(0.05)
    assert [str(prefix) for prefix in speaker.end_of_rib_at] == ["192.0.2.100/32"], "after the routes, not before"
    d.restart_stop()
    await asyncio.wait_for(task, 20)
    assert speaker.stopped_withdrawing is False and speaker.announced, "the peers keep the routes"


async def test_without_graceful_restart_a_restart_stop_withdraws(tmp_path: Path, listener: int) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(document(port=listener))
    d, _, task = await _run(path, {})
    d.restart_stop()
    await asyncio.wait_for(task, 20)
    assert FakeSpeaker.instances[-1].stopped_withdrawing is True


class _RefusingPlane(_RecordingPlane):
    """The carry-over fails (the earlier program's maps went away) and the kernel refuses the swap (someone else
    attached a program in between)."""

    def inherit(self, earlier: Any) -> bool:
        super().inherit(earlier)
        raise OSError(2, "No such file or directory")

    def take_over(self, ifname: str, earlier: Any) -> None:
        raise bpf.DataPlaneError(
            f"taking over XDP on {ifname} from program {earlier.prog_id}: another program is attached"
        )


async def test_a_refused_takeover_is_logged_and_the_daemon_runs_on(
    tmp_path: Path, listener: int, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(document(port=listener))
    planes: list[_RefusingPlane] = []

    def plane_factory(settings: Any) -> Any:
        plane = _RefusingPlane(settings)
        plane.earlier, plane.owner = {"lo": "native"}, d
        planes.append(plane)
        return plane

    d = fake_daemon(path, plane_factory)
    task = asyncio.create_task(d.run(handle_signals=False))
    try:
        async with asyncio.timeout(20):
            await d.ready_event.wait()
        assert ("inherit", "7") in planes[0].interface_log, "the carry-over was tried"
        assert "event=xdp_takeover_failed interface=lo" in caplog.text
        assert "event=state_not_inherited prog_id=7" in caplog.text
        assert planes[0].attached == {} and ("release", "lo") not in planes[0].interface_log, (
            "the earlier program is left forwarding, not removed"
        )
        await asyncio.sleep(0.5)
        assert not task.done(), "the daemon runs on"
        assert FakeSpeaker.instances[-1].announced, "and announces what its checks found"
    finally:
        d.stop_trigger.set()
        await asyncio.wait_for(task, 20)


async def test_a_restart_stop_asked_during_a_full_stop_changes_nothing(tmp_path: Path, listener: int) -> None:
    """The first stop asked for is the one done: a SIGUSR2 that arrives once a full stop is under way would
    otherwise leave XDP attached after the routes were withdrawn and drained."""
    path = tmp_path / "lb.yaml"
    path.write_text(document(port=listener))
    d, plane, task = await _run(path, {})
    d.stop_trigger.set()
    d.restart_stop()
    await asyncio.wait_for(task, 20)
    assert not d.restarting and plane.interface_log[-1] == ("detach", "lo")
