import argparse
import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from balancer import cli


def test_version_names_the_package(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        cli.main(["--version"])
    except SystemExit as exit:
        assert exit.code == 0
    assert capsys.readouterr().out.startswith("xdplb 0.")


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("xdplb")  # what `pip install` put beside the venv's python
    out = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("xdplb ")


def test_the_cli_loads_no_lab_module() -> None:
    """Only ``xdplb demo`` needs the lab (pyroute2, namespaces): the CLI imports it inside that verb."""
    code = "import sys, balancer.cli; print(sorted(m for m in sys.modules if m.startswith('balancer.lab')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "[]\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "x.yaml", "--drain-seconds", "-1"], "argument --drain-seconds: must be between 0 and a year, not -1"),
        (["run", "x.yaml", "--start-grace", "nan"], "argument --start-grace: must be between 0 and a year, not nan"),
        (["run", "x.yaml", "--start-grace", "soon"], "argument --start-grace: not a number of seconds: 'soon'"),
        (["demo", "--duration", "-5"], "argument --duration: must be between 0 and a year, not -5"),
        (["status", "--rate", "inf"], "argument --rate: must be between 0 and a year, not inf"),
    ],
)
def test_bad_durations_are_refused_before_anything_runs(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    assert exit.value.code == 2 and message in capsys.readouterr().err


def test_every_option_has_help() -> None:
    for action in _actions(cli.build_parser()):
        assert action.help, f"{action.option_strings or action.dest} has no help text"


def _actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _actions(sub)
        elif not isinstance(action, argparse._HelpAction):
            found.append(action)
    return found


@pytest.mark.parametrize(("restart", "status"), [(False, 0), (True, cli.RESTART_EXIT_STATUS)])
def test_run_exits_with_the_restart_status_after_a_restart_stop(
    restart: bool, status: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status systemd's RestartForceExitStatus starts the unit again on; the daemon itself is faked here (its
    restart stop is tested in tests/balancer/test_daemon_restart.py)."""
    from balancer import daemon, faces

    class _Daemon:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self.restarting = False

        async def run(self) -> None:
            self.restarting = restart

    monkeypatch.setattr(daemon, "Daemon", _Daemon)
    monkeypatch.setattr(faces, "attach", lambda node, **options: None)
    path = tmp_path / "lb.yaml"
    path.write_text("interfaces: [lo]\n")
    assert cli.main(["run", str(path), "--state-file", "none"]) == status


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGUSR2, cli.RESTART_EXIT_STATUS), (signal.SIGTERM, 0)])
def test_a_stop_asked_for_while_starting_is_kept_until_the_daemon_can_act_on_it(
    signum: signal.Signals, status: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `systemctl restart` in the seconds bcc takes to load: the signal arrives before the daemon's handlers; it
    must neither kill the process (SIGUSR2's default action) nor be lost. The daemon is faked; its stops are not."""
    from balancer import daemon, faces, preflight

    class _Daemon:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self.restarting = False
            self.stop_trigger = asyncio.Event()

        def restart_stop(self) -> None:
            self.restarting = True
            self.stop_trigger.set()

        async def run(self) -> None:
            await asyncio.wait_for(self.stop_trigger.wait(), 10)

    def verify_while_a_signal_arrives(cfg: object, *, source: str) -> None:
        os.kill(os.getpid(), signum)

    monkeypatch.setattr(daemon, "Daemon", _Daemon)
    monkeypatch.setattr(faces, "attach", lambda node, **options: None)
    monkeypatch.setattr(preflight, "verify", verify_while_a_signal_arrives)
    before = signal.getsignal(signum)
    path = tmp_path / "lb.yaml"
    path.write_text("interfaces: [lo]\n")
    assert cli.main(["run", str(path), "--state-file", "none"]) == status
    assert signal.getsignal(signum) == before, "the process's own handlers are back"
