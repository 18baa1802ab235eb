"""The bridge ExaBGP runs as its API process: it relays both ways, and tells ExaBGP to shut down when the daemon's
end of the socket closes (the fail-safe for a daemon that dies without PDEATHSIG reaching ExaBGP)."""

import asyncio
import os
import subprocess
import time
import sys
from pathlib import Path

import bgp

BRIDGE = Path(bgp.__file__).with_name("_bridge.py")


async def test_bridge_relays_and_asks_for_shutdown_when_the_daemon_goes(tmp_path: Path) -> None:
    connected: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    server = await asyncio.start_unix_server(lambda r, w: connected.put_nowait((r, w)), path=str(tmp_path / "s"))
    # Stands in for ExaBGP: its stdin/stdout are the bridge's stdout/stdin.
    bridge = await asyncio.create_subprocess_exec(
        sys.executable, str(BRIDGE), str(tmp_path / "s"), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert bridge.stdin is not None and bridge.stdout is not None
    try:
        reader, writer = await asyncio.wait_for(connected.get(), 10)
        writer.write(b"announce route 192.0.2.1/32 next-hop self\n")
        await writer.drain()
        assert await asyncio.wait_for(bridge.stdout.readline(), 5) == b"announce route 192.0.2.1/32 next-hop self\n"
        bridge.stdin.write(b"done\n")
        await bridge.stdin.drain()
        assert await asyncio.wait_for(reader.readline(), 5) == b"done\n"
        writer.close()  # the daemon is gone
        assert await asyncio.wait_for(bridge.stdout.readline(), 5) == b"shutdown\n"
        assert await asyncio.wait_for(bridge.wait(), 5) == 0
    finally:
        if bridge.returncode is None:
            bridge.kill()
            await bridge.wait()
        server.close()


async def test_bridge_exits_when_exabgp_closes_its_pipe(tmp_path: Path) -> None:
    connected: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    server = await asyncio.start_unix_server(lambda r, w: connected.put_nowait((r, w)), path=str(tmp_path / "s"))
    bridge = await asyncio.create_subprocess_exec(
        sys.executable, str(BRIDGE), str(tmp_path / "s"), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert bridge.stdin is not None
    try:
        reader, _ = await asyncio.wait_for(connected.get(), 10)
        bridge.stdin.close()  # ExaBGP is gone
        assert await asyncio.wait_for(bridge.wait(), 5) == 0
        assert await asyncio.wait_for(reader.read(), 5) == b"", "the daemon sees the channel close"
    finally:
        if bridge.returncode is None:
            bridge.kill()
            await bridge.wait()
        server.close()


def test_a_process_started_dying_with_us_dies_when_its_starter_is_killed() -> None:
    """What ExaBGP is started through: its starter SIGKILLed, it is killed too (no Python ran in between)."""
    starter = (
        "import subprocess, sys; from bgp import _channel;"
        "child = subprocess.Popen(_channel.dying_with_us(['sleep', '60'])); print(child.pid, flush=True);"
        "import time; time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", starter],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    time.sleep(0.3)  # setpriv has set the signal and exec'd sleep
    assert Path(f"/proc/{child}").exists()
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child), "the child outlived its starter"


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False
