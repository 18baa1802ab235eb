import os
from collections.abc import Iterator

import pytest

import bpf
from tests.bpf import world


def require_bpf() -> None:
    """Skip on an unprivileged laptop; fail in CI, where these tests must run."""
    reason = None
    if os.geteuid() != 0:
        reason = "needs root for BPF"
    else:
        try:
            import bcc  # noqa: F401
        except ImportError:
            reason = "needs bcc (Debian python3-bpfcc) on this python"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and this test cannot run: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def loaded_plane() -> Iterator[bpf.DataPlane]:
    require_bpf()
    plane = bpf.DataPlane(world.SETTINGS)
    plane.setup()
    try:
        yield plane
    finally:
        plane.cleanup()


@pytest.fixture
def plane(loaded_plane: bpf.DataPlane) -> Iterator[bpf.DataPlane]:
    """The program loaded once per session, with the test world programmed afresh and empty flow tables."""
    world.program(loaded_plane)
    yield loaded_plane
    for key in list(loaded_plane.services):
        loaded_plane.remove_service(key)
