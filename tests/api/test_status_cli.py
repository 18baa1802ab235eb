"""``xdplb status`` against the real API served on loopback around a fake controller."""

import asyncio
import socket
import sys
from pathlib import Path

import pytest

import config
from balancer import cli, status, status_table
from tests.api import fake_controller, serving
from tests.api.fake_controller import FakeController


async def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    # cli.main is synchronous (urllib): run it off the loop that serves the API
    code = await asyncio.to_thread(cli.main, argv)
    out, err = capsys.readouterr()
    return code, out, err


async def test_prints_vips_services_backends_and_peers(
    controller: FakeController, base_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    controller.overrides["dns/198.18.0.21"] = config.AdminState.DISABLED
    code, out, err = await _run(["status", "--api", base_url], capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("xdplb 0.1.0, ready, up ") and "eth0 (native)" in lines[0]
    assert any(line.split()[:2] == ["192.0.2.53/32", "WITHDRAWN"] for line in lines)
    assert any(line.split()[:2] == ["192.0.2.100/32", "announced"] for line in lines)
    header = next(line for line in lines if line.startswith("SERVICE / BACKEND"))
    assert header.split()[-1] == "PACKETS"
    assert any(line.startswith("dns 192.0.2.53:53/udp") and " DOWN " in line for line in lines)
    assert any(line.startswith("[2001:db8::53]:53/udp  ") for line in lines)  # default name not repeated
    refused = next(line for line in lines if line.startswith("  198.18.0.12"))
    assert refused.split()[:4] == ["198.18.0.12", "DOWN", "connection", "refused"]
    assert any(line.startswith("  198.18.0.21") and "disabled*" in line for line in lines)
    assert any(line.startswith("* admin state set through the API") for line in lines)
    assert any(line.split()[:2] == ["2001:db8::1", "down"] and line.endswith("connection refused") for line in lines)


class _Ticking(FakeController):
    def snapshot(self) -> status.Snapshot:
        self.tick += 1
        return super().snapshot()


async def test_rate_samples_twice_and_shows_packets_per_second(capsys: pytest.CaptureFixture[str]) -> None:
    # snapshots are cached: two samples 0.2 s apart see two snapshots only with a shorter interval than the 1 s default
    async with serving.serve(_Ticking(), snapshot_interval=0.1) as (base_url, _):
        code, out, err = await _run(["status", "--api", base_url, "--rate", "0.2"], capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert next(line for line in lines if line.startswith("SERVICE / BACKEND")).split()[-1] == "PKT/S"
    rates = {line.split()[0]: line.split()[-1] for line in lines if line.startswith("  ")}
    assert rates["198.18.0.12"] == "0"  # down: no traffic
    assert float(rates["198.18.0.11"]) > 0 and float(rates["2001:db8::21"]) > 0


async def test_unreachable_api_exits_1_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, out, err = await _run(["status", "--api", f"http://127.0.0.1:{port}"], capsys)
    assert (code, out) == (1, "")
    assert err.startswith(f"xdplb status: cannot reach the xdplb API at http://127.0.0.1:{port}: ")
    assert "refused" in err


async def test_something_else_than_the_api_exits_1(base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await _run(["status", "--api", f"{base_url}/static"], capsys)
    assert code == 1 and "answered HTTP 404" in err


async def test_address_taken_from_the_config_file(
    controller: FakeController, base_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = base_url.rsplit(":", 1)[1]
    path = tmp_path / "xdplb.yaml"
    path.write_text(f'interfaces: [eth0]\napi: {{listen: "127.0.0.1:{port}"}}\n')
    code, out, _ = await _run(["status", "--config", str(path)], capsys)
    assert code == 0 and out.startswith("xdplb 0.1.0")
    code, out, _ = await _run(["status", "--api", f"127.0.0.1:{port}"], capsys)  # scheme optional
    assert code == 0 and out.startswith("xdplb 0.1.0")
    path.write_text("interfaces: [eth0]\napi: {listen: nowhere}\n")
    code, _, err = await _run(["status", "--config", str(path)], capsys)
    assert code == 1 and "api.listen" in err


def test_wildcard_listen_is_reached_over_loopback() -> None:
    assert status_table.api_url(fake_controller.load(listen="0.0.0.0:9180", token_file="t")) == "http://127.0.0.1:9180"
    assert status_table.api_url(fake_controller.load(listen="[::]:9181", token_file="t")) == "http://[::1]:9181"
    assert status_table.api_url(fake_controller.load(listen="[::1]:9182")) == "http://[::1]:9182"


async def test_console_script_end_to_end(base_url: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "balancer.cli",
        "status",
        "--api",
        base_url,
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    assert b'"config_source": "/etc/xdplb/fake.yaml"' in out
