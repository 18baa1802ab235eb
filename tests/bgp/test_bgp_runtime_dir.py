"""ExaBGP's config, which holds the MD5 passwords, is written to a private runtime directory, not a mkdtemp under
/tmp, and what a killed daemon left there is removed at the next start (``bgp._runtime``). No ExaBGP runs here:
a stand-in records what it was given and exits."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import bgp
import config

CONFIG = config.BgpConfig.model_validate(
    {
        "local_as": 65001,
        "router_id": "192.0.2.1",
        "peers": [{"address": "127.0.0.2", "peer_as": 65000, "password": "md5-secret"}],
    }
)

# argv: -c server CONFIG; records the modes and location of what the speaker prepared, then fails the start
_STAND_IN = """
import json, os, stat, sys
conf = sys.argv[2]
workdir = os.path.dirname(conf)
mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)
record = {"config": conf, "config_mode": mode(conf), "workdir_mode": mode(workdir),
          "base_mode": mode(os.path.dirname(workdir)), "socket_mode": mode(os.path.join(workdir, "api.sock")),
          "password_inside": "md5-secret" in open(conf).read()}
open(os.environ["XDPLB_TEST_RECORD"], "w").write(json.dumps(record))
sys.exit(3)
"""


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


async def _start_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **kwargs: object) -> dict[str, object]:
    record = tmp_path / "record.json"
    monkeypatch.setenv("XDPLB_TEST_RECORD", str(record))
    speaker = bgp.Speaker(CONFIG, exabgp=[sys.executable, "-c", _STAND_IN], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(bgp.BgpError, match="exited with 3"):
        await speaker.start()
    result: dict[str, object] = json.loads(record.read_text())
    return result


async def test_the_config_is_private_in_the_runtime_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "run" / "xdplb"
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(base))  # what systemd's RuntimeDirectory=xdplb sets
    seen = await _start_once(tmp_path, monkeypatch)
    workdir = Path(str(seen["config"])).parent
    assert workdir.parent == base and workdir.name.startswith(f"bgp-{os.getpid()}-")
    assert seen["password_inside"] is True
    assert (seen["config_mode"], seen["socket_mode"], seen["workdir_mode"], seen["base_mode"]) == (
        0o600,
        0o600,
        0o700,
        0o700,
    )
    assert not workdir.exists()  # removed when the start failed, as by stop()
    assert stat.S_IMODE(base.stat().st_mode) == 0o700


async def test_what_a_killed_daemon_left_is_removed_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "runtime"
    base.mkdir(mode=0o755)
    stale = base / f"bgp-{_dead_pid()}-k1ll3d"
    stale.mkdir()
    (stale / "exabgp.conf").write_text("neighbor 127.0.0.2 { md5-password 'old-secret'; }\n")
    live = base / f"bgp-{os.getpid()}-another-speaker"  # a speaker of this very process: still in use
    live.mkdir()
    other = base / "not-ours"
    other.mkdir()
    await _start_once(tmp_path, monkeypatch, runtime_dir=base)
    assert not stale.exists()
    assert live.exists() and other.exists()
    assert stat.S_IMODE(base.stat().st_mode) == 0o700


async def test_a_runtime_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "theirs"
    base.mkdir()
    os.chown(base, 12345, 12345) if os.geteuid() == 0 else pytest.skip("needs root to hand a directory over")
    speaker = bgp.Speaker(CONFIG, exabgp=[sys.executable, "-c", "raise SystemExit(3)"], runtime_dir=base)
    with pytest.raises(bgp.BgpError, match="not a directory owned by uid"):
        await speaker.start()
