"""Where ExaBGP's config (it holds the MD5 passwords) and API socket live: a private runtime directory.

The base is ``$RUNTIME_DIRECTORY`` (systemd's ``RuntimeDirectory=xdplb``, mode 0700, removed when the unit stops),
else ``/run/xdplb`` for root, else ``$XDG_RUNTIME_DIR/xdplb``, else ``xdplb-UID`` in the temporary directory. It is
made mode 0700 and must belong to this user. Each speaker gets ``bgp-PID-XXXX`` in it (0700) and its files are
0600. A daemon killed with SIGKILL leaves its directory behind: the next speaker to start removes the
``bgp-PID-*`` directories of processes that no longer run.
"""

import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

__all__ = ["default_base", "new_instance_dir", "prepare_base", "replace_private", "write_private"]

log = logging.getLogger(__name__)

_PREFIX = "bgp-"


def default_base() -> Path:
    """The base runtime directory for this process, as the module docstring orders them."""
    systemd = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd)
    if os.geteuid() == 0:
        return Path("/run/xdplb")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "xdplb"
    return Path(tempfile.gettempdir()) / f"xdplb-{os.geteuid()}"


def prepare_base(base: Path) -> Path:
    """Create ``base`` (mode 0700) if needed, check that it is a directory of ours that only we can enter, and
    remove the instance directories that dead processes left in it. OSError if it cannot be made private."""
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(base)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise PermissionError(f"{base} is not a directory owned by uid {os.geteuid()}")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(base, 0o700)
    for entry in base.iterdir():
        pid = _owner_pid(entry.name)
        if pid is not None and not _alive(pid) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            log.info("event=bgp_stale_runtime_removed path=%s pid=%d", entry, pid)
    return base


def new_instance_dir(base: Path) -> Path:
    """A new private directory (0700) for one speaker of this process in ``base``."""
    return Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=base))


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file at ``path`` that only this user can read (0600 from its creation)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)


def replace_private(path: Path, text: str) -> None:
    """Replace the file at ``path`` with ``text`` in one step (a reader sees the old or the new file, never half of
    one), created 0600 like ``write_private``."""
    staged = path.with_name(path.name + ".new")
    staged.unlink(missing_ok=True)
    write_private(staged, text)
    staged.replace(path)


def _owner_pid(name: str) -> int | None:
    if not name.startswith(_PREFIX):
        return None
    pid = name[len(_PREFIX) :].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True
