import os
from pathlib import Path

import pytest

import bpf


def _headers(src: Path, version: str) -> None:
    for tree in (f"linux-headers-{version}-common", f"linux-headers-{version}-amd64"):
        (src / tree / "include" / "linux").mkdir(parents=True)
        (src / tree / "arch" / "x86").mkdir(parents=True)
    (src / f"linux-headers-{version}-common" / "include" / "linux" / "types.h").write_text("common")
    (src / f"linux-headers-{version}-common" / "include" / "linux" / "kconfig.h").write_text("common")
    (src / f"linux-headers-{version}-amd64" / "include" / "linux" / "kconfig.h").write_text("amd64")


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    monkeypatch.setattr("platform.release", lambda: "0.0.0-test-no-such-kernel")
    monkeypatch.setattr("platform.machine", lambda: "x86_64")


def test_merges_common_tree_under_arch_tree(tmp_path: Path, no_env: None) -> None:
    _headers(tmp_path / "src", "6.1.0-9")
    tree = bpf.ensure_kernel_source(cache=tmp_path / "cache", src=tmp_path / "src")
    assert tree == tmp_path / "cache" / "linux-headers-6.1.0-9-amd64"
    assert (tree / "include/linux/types.h").read_text() == "common"
    assert (tree / "include/linux/kconfig.h").read_text() == "amd64", "the arch tree overrides the common one"
    assert os.environ["BCC_KERNEL_SOURCE"] == str(tree)
    again = bpf.ensure_kernel_source(cache=tmp_path / "cache", src=tmp_path / "src")
    assert again == tree


def test_missing_headers_names_the_package(tmp_path: Path, no_env: None) -> None:
    (tmp_path / "src").mkdir()
    with pytest.raises(bpf.KernelHeadersError, match="linux-headers-amd64"):
        bpf.ensure_kernel_source(cache=tmp_path / "cache", src=tmp_path / "src")
