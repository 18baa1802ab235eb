"""``xdplb stop``: the kind of stop asked of systemd (a fake ``busctl`` stands in for the system bus, which these
machines do not run), the signal that follows, and the wait for the exit."""

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from balancer import cli, stop

# Records each call, and answers as systemd's bus would for a unit whose job is $FAKE_JOB_TYPE ("": no job).
_BUSCTL = """\
#!/bin/sh
echo "$@" >> "$FAKE_BUSCTL_LOG"
case "$*" in
  *org.freedesktop.systemd1.Unit\\ Job)
    if [ -n "$FAKE_JOB_TYPE" ]; then echo '(uo) 42 "/org/freedesktop/systemd1/job/42"'; else echo '(uo) 0 "/"'; fi ;;
  *org.freedesktop.systemd1.Job\\ JobType) echo "s \\"$FAKE_JOB_TYPE\\"" ;;
  *) exit 1 ;;
esac
"""

# A stand-in daemon (`xdplb stop` signals only a command line that names xdplb and `run`): writes the name of the
# first signal it gets, then exits (or ignores them all).
_DAEMON = textwrap.dedent("""
    # xdplb run, as far as `xdplb stop` can tell
    import signal, sys, time
    def got(signum, frame):
        open(sys.argv[2], "w").write(signal.Signals(signum).name)
        sys.exit(0)
    for signum in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN if sys.argv[3] == "deaf" else got)
    open(sys.argv[2] + ".ready", "w").close()
    time.sleep(60)
""")


@pytest.fixture
def bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake ``busctl`` first on PATH; returns the file its calls are logged to."""
    fake = tmp_path / "bin" / "busctl"
    fake.parent.mkdir()
    fake.write_text(_BUSCTL)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_BUSCTL_LOG", str(tmp_path / "busctl.log"))
    return tmp_path / "busctl.log"


def _daemon(tmp_path: Path, behaviour: str = "obeys") -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    got = tmp_path / "signal"
    process = subprocess.Popen([sys.executable, "-c", _DAEMON, "run", str(got), behaviour])
    try:
        deadline = time.monotonic() + 10
        while not Path(str(got) + ".ready").exists():
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.01)
        yield process, got
    finally:
        process.kill()
        process.wait(5)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    yield from _daemon(tmp_path)


@pytest.mark.parametrize(
    ("job", "expected"), [("restart", "SIGUSR2"), ("try-restart", "SIGUSR2"), ("stop", "SIGTERM"), ("", "SIGTERM")]
)
def test_a_restart_job_gets_a_restart_stop_and_any_other_a_full_stop(
    bus: Path,
    daemon: tuple[subprocess.Popen[bytes], Path],
    monkeypatch: pytest.MonkeyPatch,
    job: str,
    expected: str,
) -> None:
    monkeypatch.setenv("FAKE_JOB_TYPE", job)
    process, got = daemon
    assert cli.main(["stop", str(process.pid), "--systemd-unit", "xdplb.service"]) == 0
    assert got.read_text() == expected
    assert process.poll() is not None or process.wait(5) == 0, "it had exited when stop returned"
    calls = bus.read_text().splitlines()
    assert calls[0].split()[2:] == [
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1/unit/xdplb_2eservice",
        "org.freedesktop.systemd1.Unit",
        "Job",
    ]
    assert len(calls) == (2 if job else 1), "the job's type is asked only when there is a job"


def test_without_a_bus_the_stop_is_a_full_one(
    bus: Path, daemon: tuple[subprocess.Popen[bytes], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no busctl at all
    assert stop.restart_job_pending("xdplb.service") is False
    process, got = daemon
    monkeypatch.setenv("FAKE_JOB_TYPE", "restart")
    (bus.parent / "bin" / "busctl").write_text("#!/bin/sh\nexit 1\n")  # a bus that does not answer
    monkeypatch.setenv("PATH", f"{bus.parent / 'bin'}{os.pathsep}/usr/bin:/bin")
    assert cli.main(["stop", str(process.pid), "--systemd-unit", "xdplb.service"]) == 0
    assert got.read_text() == "SIGTERM"


def test_explicit_kinds_and_a_daemon_that_does_not_exit(tmp_path: Path) -> None:
    for flag, expected in (("--restart", "SIGUSR2"), ("--full", "SIGTERM")):
        for process, got in _daemon(tmp_path / flag.strip("-")):
            assert cli.main(["stop", str(process.pid), flag]) == 0
            assert got.read_text() == expected
    for process, _ in _daemon(tmp_path / "deaf", "deaf"):
        started = time.monotonic()
        assert cli.main(["stop", str(process.pid), "--full", "--timeout", "0.5"]) == 1
        assert 0.5 <= time.monotonic() - started < 5 and process.poll() is None
    assert cli.main(["stop", "4194304", "--full"]) == 0, "a process already gone is stopped"
    with pytest.raises(SystemExit):
        cli.main(["stop", "1"])  # one of --restart, --full, --systemd-unit is required


def test_an_odd_unit_name_is_escaped_as_systemd_does() -> None:
    assert stop._unit_path("xdplb@eth-0.service") == "/org/freedesktop/systemd1/unit/xdplb_40eth_2d0_2eservice"


def test_only_an_xdplb_daemon_is_signalled_and_an_exited_one_is_nothing_to_do() -> None:
    other = subprocess.Popen(["sleep", "30"])
    try:
        assert cli.main(["stop", str(other.pid), "--restart"]) == 1
        time.sleep(0.2)
        assert other.poll() is None, "SIGUSR2 would have killed it"
    finally:
        other.kill()
        other.wait(5)
    assert cli.main(["stop", "--systemd-unit", "xdplb.service"]) == 0, "ExecStop after the daemon exited on its own"
