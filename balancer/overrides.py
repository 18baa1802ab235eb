"""Run-time admin overrides kept on disk, so a drained backend stays drained across a restart or upgrade.

The file is JSON, ``{"web/198.18.0.11": "drained"}``, written atomically (temporary file, then rename) on every
change. Keys the running config no longer has are dropped when read; an unreadable file is logged and ignored
(the file's admin states apply), never fatal.
"""

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import config

__all__ = ["STATE_DIR", "default_path", "load", "save"]

log = logging.getLogger(__name__)

STATE_DIR = Path("/var/lib/xdplb")


def default_path(config_path: Path) -> Path:
    """One state file per config file: ``/var/lib/xdplb/overrides-<12 hex of its absolute path>.json``."""
    digest = hashlib.sha256(str(config_path.resolve()).encode()).hexdigest()[:12]
    return STATE_DIR / f"overrides-{digest}.json"


def load(path: Path, keys: Iterable[str]) -> dict[str, config.AdminState]:
    """The overrides saved in ``path`` for backends among ``keys``; {} when there is no usable file."""
    try:
        raw = json.loads(path.read_text())
        saved = {str(key): config.AdminState(value) for key, value in dict(raw).items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError) as error:
        log.warning("event=overrides_unreadable path=%s error=%s using=config_file_states", path, error)
        return {}
    known = set(keys)
    kept = {key: state for key, state in saved.items() if key in known}
    if kept or saved:
        log.info("event=overrides_restored path=%s restored=%d dropped=%d", path, len(kept), len(saved) - len(kept))
    return kept


def save(path: Path, overrides: Mapping[str, config.AdminState]) -> None:
    """Write ``overrides`` to ``path`` atomically; a failure is logged, and the overrides still apply in memory."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=path.name, delete=False) as handle:
            json.dump({key: state.value for key, state in sorted(overrides.items())}, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except OSError as error:
        log.error("event=overrides_not_saved path=%s error=%s", path, error)
