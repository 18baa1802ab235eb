"""The shipped systemd unit calls the CLI with arguments it accepts."""

import shlex
from pathlib import Path

from balancer import cli

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "systemd" / "xdplb.service"


def _commands(key: str) -> list[list[str]]:
    return [shlex.split(line.split("=", 1)[1]) for line in UNIT.read_text().splitlines() if line.startswith(key + "=")]


def test_exec_lines_parse_with_the_real_cli() -> None:
    commands = _commands("ExecStartPre") + _commands("ExecStart")
    assert [argv[1] for argv in commands] == ["check", "run"]
    for argv in commands:
        assert argv[0].endswith("/xdplb")
        args = cli.build_parser().parse_args(argv[1:])
        assert args.config == "/etc/xdplb/xdplb.yaml"
    run = cli.build_parser().parse_args(_commands("ExecStart")[0][1:])
    assert run.state_file == "/var/lib/xdplb/overrides.json"


def test_reload_and_stop_use_the_signals_the_daemon_handles() -> None:
    assert _commands("ExecReload") == [["/bin/kill", "-HUP", "$MAINPID"]]
    assert "KillSignal=SIGTERM" in UNIT.read_text().splitlines()


def test_stop_asks_systemd_whether_it_is_a_restart() -> None:
    (argv,) = _commands("ExecStop")
    assert argv[0].endswith("/xdplb") and argv[1:3] == ["stop", "$MAINPID"]
    args = cli.build_parser().parse_args([argv[1], "4242", *argv[3:]])  # systemd puts the pid in for $MAINPID
    assert (args.pid, args.systemd_unit, args.restart, args.full) == (4242, "%n", False, False)
    timeout = [
        float(line.split("=", 1)[1]) for line in UNIT.read_text().splitlines() if line.startswith("TimeoutStopSec=")
    ]
    assert args.timeout < timeout[0], "xdplb stop gives up before systemd does"
    assert f"SuccessExitStatus={cli.RESTART_EXIT_STATUS}" in UNIT.read_text().splitlines(), "a restart stop is clean"


def test_open_file_limit_is_raised_above_the_default() -> None:
    limits = [line.split("=", 1)[1] for line in UNIT.read_text().splitlines() if line.startswith("LimitNOFILE=")]
    assert len(limits) == 1
    soft, _, hard = limits[0].partition(":")
    assert int(soft) >= 65536 and int(hard or soft) >= int(soft)  # systemd's default soft limit is 1024


def test_the_runtime_directory_is_private() -> None:
    lines = UNIT.read_text().splitlines()
    assert "RuntimeDirectory=xdplb" in lines and "RuntimeDirectoryMode=0700" in lines


def test_a_restart_stop_is_started_again_by_systemd() -> None:
    lines = UNIT.read_text().splitlines()
    assert f"RestartForceExitStatus={cli.RESTART_EXIT_STATUS}" in lines
    assert any("systemctl kill -s SIGUSR2 xdplb" in line for line in lines), "the unit says how to restart"
