import subprocess
import sys
from pathlib import Path

from balancer import cli


def test_version_names_the_package(capsys) -> None:
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
