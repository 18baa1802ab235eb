"""Find kernel headers for bcc, or build a tree it can use.

bcc compiles the XDP program against kernel headers. Machines whose running kernel has no headers package
(cloud and VM kernels) still compile fine against Debian's ``linux-headers-<arch>``: its ``-common`` tree
overlaid with the arch tree, as one directory, given to bcc as ``BCC_KERNEL_SOURCE``. The merged tree is a
symlink farm built once and cached outside the repository.
"""

import logging
import os
import platform
import shutil
import tempfile
from pathlib import Path

from config import XdplbError

__all__ = ["KernelHeadersError", "ensure_kernel_source"]

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path("/var/cache/xdplb/kernel-source")
_DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


class KernelHeadersError(XdplbError, FileNotFoundError):
    """No usable kernel headers: names the package to install."""


def _usable(tree: Path) -> bool:
    return (tree / "include" / "linux").is_dir() and (tree / "arch").is_dir()


def _debian_pairs(src: Path, arch: str) -> list[tuple[Path, Path]]:
    """(common, arch) header trees of the same version, newest first."""
    pairs = []
    for arch_tree in src.glob(f"linux-headers-*-{arch}"):
        version = arch_tree.name.removeprefix("linux-headers-").removesuffix(f"-{arch}")
        common = src / f"linux-headers-{version}-common"
        if common.is_dir():
            pairs.append((common, arch_tree))
    return sorted(pairs, key=lambda pair: pair[1].stat().st_mtime, reverse=True)


def _merge(common: Path, arch_tree: Path, dest: Path) -> None:
    """Build ``dest`` as symlinks to ``common`` overlaid with ``arch_tree``, atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    try:
        for tree in (common, arch_tree):
            for root, dirs, files in os.walk(tree):
                rel = Path(root).relative_to(tree)
                for name in dirs:
                    link = work / rel / name
                    if (Path(root) / name).is_symlink():
                        link.unlink(missing_ok=True)
                        link.symlink_to(os.readlink(Path(root) / name))
                    else:
                        link.mkdir(exist_ok=True)
                for name in files:
                    link = work / rel / name
                    link.unlink(missing_ok=True)
                    link.symlink_to(Path(root) / name)
        work.rename(dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def ensure_kernel_source(*, cache: Path = DEFAULT_CACHE, src: Path = Path("/usr/src")) -> Path | None:
    """Make sure bcc can find kernel headers; return the tree given in ``BCC_KERNEL_SOURCE``, if any.

    In order: an existing ``BCC_KERNEL_SOURCE``; the running kernel's own headers (returns None, bcc finds
    them); a cached merged Debian tree; a merged tree built now. The chosen path is exported in
    ``os.environ`` so child processes inherit it.
    """
    given = os.environ.get("BCC_KERNEL_SOURCE")
    if given and _usable(Path(given)):
        return Path(given)
    if _usable(Path("/lib/modules") / platform.release() / "build"):
        return None
    arch = _DEBIAN_ARCH.get(platform.machine(), platform.machine())
    pairs = _debian_pairs(src, arch)
    if not pairs:
        raise KernelHeadersError(
            f"no kernel headers for {platform.release()} and no Debian headers under {src}: "
            f"install the Debian package linux-headers-{arch} (apt-get install linux-headers-{arch})"
        )
    common, arch_tree = pairs[0]
    dest = cache / arch_tree.name
    if not _usable(dest):
        log.info("event=kernel_source_build common=%s arch=%s dest=%s", common, arch_tree, dest)
        try:
            _merge(common, arch_tree, dest)
        except OSError:
            if not _usable(dest):  # else another process built it first
                raise
    os.environ["BCC_KERNEL_SOURCE"] = str(dest)
    return dest
