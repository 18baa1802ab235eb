"""Which lab namespaces belong to which run, so a crashed run's leftovers (and only those) can be removed.

Each ``Lab`` writes ``/run/xdplb-lab/<run-id>.json`` with its owner's pid and start time and the namespaces it made.
"""

import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

from pyroute2 import netns

__all__ = ["NETNS_DIR", "REGISTRY_DIR", "cleanup_leftovers", "kill_netns_processes", "remove_netns", "start_time"]

log = logging.getLogger(__name__)

REGISTRY_DIR = Path("/run/xdplb-lab")
NETNS_DIR = Path("/run/netns")


def start_time(pid: int) -> int | None:
    """The process start time in clock ticks (tells a live owner from a reused pid), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def kill_netns_processes(name: str) -> list[int]:
    """SIGKILL every other process whose network namespace is lab namespace ``name``."""
    try:
        target = os.stat(NETNS_DIR / name)
    except FileNotFoundError:
        return []
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            st = os.stat(entry / "ns" / "net")
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return killed


def remove_netns(name: str) -> None:
    """Delete lab namespace ``name`` if it still exists."""
    if (NETNS_DIR / name).exists():
        netns.remove(name)


def _owner_alive(record: dict[str, Any]) -> bool:
    pid = record.get("pid")
    return isinstance(pid, int) and start_time(pid) is not None and start_time(pid) == record.get("start_time")


def cleanup_leftovers(registry_dir: Path = REGISTRY_DIR) -> list[str]:
    """Remove the namespaces (and their processes) of lab runs whose owner process is gone.

    Only names listed in a dead run's record, and starting with its run id, are touched; runs whose owner is
    alive are left alone. Returns the namespaces removed.
    """
    removed: list[str] = []
    for path in sorted(registry_dir.glob("xl*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("event=lab_record_unreadable path=%s error=%r", path, exc)
            continue
        if _owner_alive(record):
            continue
        run_id = str(record.get("run_id", ""))
        for name in reversed(record.get("namespaces", [])):
            if not isinstance(name, str) or not run_id or not name.startswith(run_id + "-"):
                log.warning("event=lab_record_foreign_name path=%s name=%r", path, name)
                continue
            if (NETNS_DIR / name).exists():
                kill_netns_processes(name)
                remove_netns(name)
                removed.append(name)
        path.unlink()
        log.info("event=lab_leftovers_removed run=%s pid=%s namespaces=%s", run_id, record.get("pid"), removed)
    return removed
