"""``xdplb check CONFIG``: exit 0 and a summary, or exit 1 and one line per problem on stderr."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import config
from balancer import cli

EXAMPLES = Path(config.__file__).parent / "examples"


def test_valid_config_prints_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", str(EXAMPLES / "full.yaml")]) == 0
    out, err = capsys.readouterr()
    assert re.fullmatch(r"OK: 5 services, 14 backends, 5 VIPs; data plane about \d+ MiB\n", out) and err == "", out


def test_invalid_config_prints_each_problem_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "interfaces: [eth0]\n"
        "services:\n"
        "  - vip: 192.0.2.100\n"
        "    port: 80\n"
        "    backends: [198.18.0.11, 198.18.0.x]\n"
        "  - {vip: 192.0.2.100, port: 99999, backends: [198.18.0.11]}\n"
    )
    assert cli.main(["check", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}: services[0].backends[1].address: not an IP address: '198.18.0.x' (line 5)",
        f"{path}: services[1].port: input should be less than or equal to 65535, got 99999 (line 6)",
    ]


def test_missing_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", str(tmp_path / "none.yaml")]) == 1
    assert capsys.readouterr().err == f"{tmp_path / 'none.yaml'}: cannot read the file: No such file or directory\n"


def test_console_script_exit_codes(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "balancer.cli", "check"]
    good = subprocess.run([*command, str(EXAMPLES / "demo.yaml")], capture_output=True, text=True)
    assert good.returncode == 0 and good.stdout.startswith("OK: 1 services, 3 backends, 1 VIPs; data plane about ")
    bad_path = tmp_path / "bad.yaml"
    bad_path.write_text(
        "interfaces: [eth0]\nservices: [{vip: 192.0.2.100, port: 80, need: 2, backends: [198.18.0.11]}]\n"
    )
    bad = subprocess.run([*command, str(bad_path)], capture_output=True, text=True)
    assert (bad.returncode, bad.stdout) == (1, "")
    assert bad.stderr == f"{bad_path}: services[0].need: need is 2 but the service has 1 backend (line 2)\n"
    usage = subprocess.run(command, capture_output=True, text=True)
    assert usage.returncode == 2 and "CONFIG" in usage.stderr
