import subprocess
import sys

from balancer import cli


def test_version_names_the_package(capsys) -> None:
    try:
        cli.main(["--version"])
    except SystemExit as exit:
        assert exit.code == 0
    assert capsys.readouterr().out.startswith("xdplb 0.")


def test_console_script_is_installed() -> None:
    out = subprocess.run([sys.executable, "-m", "balancer.cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("xdplb ")
