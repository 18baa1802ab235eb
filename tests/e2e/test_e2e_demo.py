"""``xdplb demo`` as ``make demo`` runs it: what it prints works, ``--duration`` and SIGTERM leave nothing behind,
and after a crash the next run removes the dead run's leftovers and nobody else's."""

import json
import os
import re
import selectors
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from balancer import cli
from balancer.lab import demo, demo_lab, netns, registry
from tests.e2e.support import require_e2e

UP_LINE = re.compile(r"xdplb demo lab (xl[0-9a-f]{6}) is up")


def _start(*args: str, sigint_ignored: bool = False) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "balancer.cli", "demo", *args]
    if sigint_ignored:  # as a shell starts a background job (`xdplb demo &`): the demo must still obey SIGINT
        argv = ["sh", "-c", 'trap \'\' INT; exec "$0" "$@"', *argv]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _read_until(proc: subprocess.Popen[bytes], pattern: str, timeout: float = 90.0) -> str:
    """The demo's output up to (at least) the first match of ``pattern``."""
    assert proc.stdout is not None
    data, deadline = b"", time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while not re.search(pattern, data.decode(errors="replace")):
            if time.monotonic() > deadline or not sel.select(max(0.0, deadline - time.monotonic())):
                raise AssertionError(f"no {pattern!r} in the demo's output within {timeout:g} s:\n{data.decode()}")
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                raise AssertionError(f"the demo exited ({proc.wait()}) before {pattern!r}:\n{data.decode()}")
            data += chunk
    return data.decode(errors="replace")


def _rest(proc: subprocess.Popen[bytes]) -> str:
    return proc.communicate(timeout=60)[0].decode(errors="replace")


def _match(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    assert found is not None, f"no {pattern!r} in:\n{text}"
    return found[1]


def _run_id(text: str) -> str:
    return _match(UP_LINE.pattern, text)


def _leftovers(run_id: str) -> list[str]:
    names = [p.name for p in Path("/run/netns").glob(f"{run_id}-*")]
    paths = [registry.REGISTRY_DIR / f"{run_id}.json", demo_lab.WORKDIR_ROOT / run_id]
    return names + [str(p) for p in paths if p.exists()]


def _command(text: str, marker: str) -> list[str]:
    line = next(line for line in text.splitlines() if marker in line)
    return shlex.split(line.split("#")[0])


@pytest.mark.privileged
def test_demo_prints_what_works_and_leaves_nothing_after_its_duration() -> None:
    require_e2e()
    proc = _start("--duration", "10")
    try:
        text = _read_until(proc, r"\d\d:\d\d:\d\d .*backends up 4/4 \(b1 b2 b3 r1\(gue\)\)")
        run_id = _run_id(text)
        console = _match(r"console +(http://127\.0\.0\.1:\d+/)", text)
        metrics = urllib.request.urlopen(console + "metrics", timeout=5).read().decode()
        assert "xdplb_" in metrics
        assert b"<html" in urllib.request.urlopen(console, timeout=5).read()
        fetch = _command(text, "-client ")
        assert fetch[:4] == ["ip", "netns", "exec", f"{run_id}-client"]
        answers = {subprocess.run(fetch, capture_output=True, text=True, timeout=10).stdout.strip() for _ in range(30)}
        # r1 is a router away, in GUE: its answers prove the tunnel and the decap (each of 4 is missed by 30
        # connections with a chance of 0.02%)
        assert answers == {"b1", "b2", "b3", "r1"}, answers
        route = subprocess.run(_command(text, "ip route show"), capture_output=True, text=True, timeout=10).stdout
        assert "via 198.18.0.5" in route
        rest = _rest(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, text + rest
    assert "s are over" in rest
    assert _leftovers(run_id) == []
    with pytest.raises(OSError):  # the console relay is gone with it
        urllib.request.urlopen(console, timeout=2)


@pytest.mark.privileged
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_demo_stops_cleanly_on_a_signal(signum: signal.Signals) -> None:
    require_e2e()
    proc = _start(sigint_ignored=signum == signal.SIGINT)
    try:
        text = _read_until(proc, r"Ctrl-C removes everything")
        run_id = _run_id(text)
        proc.send_signal(signum)
        rest = _rest(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0 and "stopped; everything it made is removed" in rest, rest
    assert _leftovers(run_id) == []


@pytest.mark.privileged
def test_after_a_crash_the_next_run_removes_that_runs_leftovers_only() -> None:
    require_e2e()
    proc = _start()
    with netns.Lab() as alive:  # another run, alive: its namespaces must survive the cleanup
        alive.add_host("other", ipv4="198.18.0.77")
        try:
            text = _read_until(proc, r"Ctrl-C removes everything")
            run_id = _run_id(text)
            os.kill(proc.pid, signal.SIGKILL)  # the demo alone: its daemon, BIRD and backends live on
            proc.wait()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        left = _leftovers(run_id)
        assert f"{run_id}-lb1" in left and str(demo_lab.WORKDIR_ROOT / run_id) in left, left
        bird_dir = Path(json.loads((demo_lab.WORKDIR_ROOT / run_id / "run.json").read_text())["bird_workdir"])
        assert bird_dir.is_dir()
        removed = demo_lab.cleanup_demo_leftovers()
        assert f"{run_id}-lb1" in removed
        assert _leftovers(run_id) == [] and not bird_dir.exists()
        assert all(Path("/run/netns", name).exists() for name in alive.namespaces)
        assert not any(alive.run_id in name for name in removed)


def test_help_says_how_to_run_for_a_set_time(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert "--duration SECONDS" in shown and "removes everything it made" in shown


def test_status_line_shows_routes_backends_and_rate() -> None:
    line = demo.StatusLine({"198.18.0.11": "b1", "198.18.0.12": "b2", "198.18.1.21": "r1"})

    def status(packets: int, b2: str, b1_dataplane: str = "active") -> dict[str, object]:
        b2_dataplane = "draining (weight 0)" if b2 == "up" else "removed: down"
        backends = [
            {"address": "198.18.0.11", "health": "up", "admin": "enabled", "dataplane": b1_dataplane},
            {"address": "198.18.0.12", "health": b2, "admin": "drained", "dataplane": b2_dataplane},
            {"address": "198.18.1.21", "health": "up", "admin": "enabled", "dataplane": "active", "forwarding": "gue"},
        ]
        return {
            "vips": [{"vip": "192.0.2.100", "announced": True, "reason": "all services up"}],
            "services": [{"name": "web", "packets": packets, "backends": backends}],
        }

    first = line.render(status(100, "up"), {"192.0.2.100": {"198.18.0.5"}}, now=10.0)
    assert "192.0.2.100 announced" in first and "via 198.18.0.5" in first and "up 3/3 (b1 b2[drained] r1(gue))" in first
    assert "pps" not in first  # no rate from a single sample
    second = line.render(status(300, "down"), {"192.0.2.100": set()}, now=12.0)
    assert "up 2/3 (b1 r1(gue))" in second and "100 pps" in second and "192.0.2.100 NOT routed" in second
    assert "API not answering" in line.render(None, {"192.0.2.100": set()}, now=14.0)
    not_yet = line.render(status(300, "down", b1_dataplane="no MAC (neighbour unresolved)"), {}, now=16.0)
    assert "up 1/3 (r1(gue))" in not_yet, "healthy but not in the data plane yet: traffic would not reach it"
