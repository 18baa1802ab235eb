"""``xdplb stop``: stop a running daemon, as a full stop or as a restart stop, and wait until it has exited.

Which one is meant is said (``--restart``, ``--full``) or, from the shipped systemd unit's ``ExecStop``, asked of
systemd itself (``--systemd-unit``): the job that stops the unit is a ``restart`` or ``try-restart`` one for
``systemctl restart`` (which a package upgrade runs too), a ``stop`` one for ``systemctl stop``. A restart job gets
a restart stop (SIGUSR2: XDP keeps forwarding, the next run takes over, no client notices), anything else a full
stop (SIGTERM: withdraw, drain, detach). When systemd cannot be asked (no bus, no ``busctl``, an unexpected
answer), the stop is a full one, as before this verb existed: a restart is never guessed.
"""

import os
import re
import shutil
import signal
import subprocess
import time

import config

__all__ = ["RESTART_JOBS", "StopError", "restart_job_pending", "stop_daemon"]

RESTART_JOBS = frozenset({"restart", "try-restart"})
"""systemd job types that start the unit again after stopping it."""

_SYSTEMD = "org.freedesktop.systemd1"
_QUOTED = re.compile(r'"([^"]*)"')


class StopError(config.XdplbError, RuntimeError):
    """The daemon could not be signalled, or did not exit in time."""


def _unit_path(unit: str) -> str:
    """The unit's D-Bus object path: every byte but ASCII letters and digits as ``_xx`` (sd_bus_path_encode)."""
    escaped = "".join(c if c.isascii() and c.isalnum() else f"_{ord(c):02x}" for c in unit)
    return f"/org/freedesktop/systemd1/unit/{escaped}"


def _property(busctl: str, path: str, interface: str, name: str, timeout: float) -> str | None:
    done = subprocess.run(
        [busctl, "--system", "get-property", _SYSTEMD, path, interface, name],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    found = _QUOTED.search(done.stdout) if done.returncode == 0 else None
    return found.group(1) if found else None


def restart_job_pending(unit: str, *, timeout: float = 2.0) -> bool:
    """Whether systemd's job on ``unit`` now is a restart (``busctl``: the unit's ``Job``, then its ``JobType``).
    False when there is none, or when systemd cannot be asked."""
    busctl = shutil.which("busctl")
    if busctl is None:
        return False
    try:
        job = _property(busctl, _unit_path(unit), f"{_SYSTEMD}.Unit", "Job", timeout)  # (uo) 123 "/.../job/123"
        if job is None or job == "/":
            return False
        kind = _property(busctl, job, f"{_SYSTEMD}.Job", "JobType", timeout)  # s "restart"
    except (OSError, subprocess.TimeoutExpired):
        return False
    return kind in RESTART_JOBS


def stop_daemon(pid: int, *, restart: bool, timeout: float = 30.0) -> None:
    """Send ``pid`` SIGUSR2 (``restart``) or SIGTERM, and wait until it has exited (``timeout`` seconds at most).
    Refused (StopError) when ``pid`` is not an xdplb daemon: SIGUSR2 kills any other process."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            argv = cmdline.read().split(b"\0")
    except FileNotFoundError:
        return  # gone already
    except OSError as error:
        raise StopError(f"cannot read process {pid}: {error}") from error
    if not any(b"xdplb" in arg or b"balancer.cli" in arg for arg in argv[:3]) or b"run" not in argv:
        raise StopError(f"process {pid} is not an xdplb daemon ({b' '.join(argv[:4]).decode(errors='replace')})")
    try:
        os.kill(pid, signal.SIGUSR2 if restart else signal.SIGTERM)
    except ProcessLookupError:
        return  # gone already
    except OSError as error:
        raise StopError(f"cannot signal process {pid}: {error}") from error
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise StopError(f"process {pid} did not exit within {timeout:.0f} s")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; its parent (systemd) reaps it
