"""Shared test plumbing: the ``privileged`` marker (root, BPF, network namespaces) and the ``lab`` fixture."""

import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

_PROBE = "import ctypes, os; os._exit(0 if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) == 0 else 1)"


@functools.cache
def _privilege_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    # CLONE_NEWNET in a throwaway child: proves namespaces work here without touching anything.
    if subprocess.run([sys.executable, "-c", _PROBE], timeout=30).returncode != 0:
        return "cannot create a network namespace"
    return None


def require_privileges() -> None:
    """Skip the calling test without root and namespace support; fail instead when ``CI=true``."""
    problem = _privilege_problem()
    if problem is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and this test {problem}")
    pytest.skip(problem)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Remove what killed runs (of this suite or of the demo) left behind: namespaces, BIRDs and run directories
    of lab runs whose owner process is gone. Live runs are left alone; nothing to do without root."""
    if os.geteuid() != 0:
        return
    from balancer.lab import demo_lab

    removed = demo_lab.cleanup_demo_leftovers()
    if removed:
        print(f"removed the leftovers of dead lab runs: {removed}", file=sys.stderr)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("privileged") is not None:
        require_privileges()


@pytest.fixture(scope="session", autouse=True)
def _resource_tracker_in_the_root_namespace() -> None:
    """Start multiprocessing's resource tracker from the main thread, in the host namespace.

    Daemons under test run in threads inside lab namespaces, and their Maglev worker pool would otherwise start
    the (process-wide) tracker there, where removing the lab kills it.
    """
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


@pytest.fixture
def lab() -> Iterator[Any]:
    """A namespace lab of the test's own (``balancer.lab.netns.Lab``), removed afterwards; needs BPF (a skip on an
    unprivileged laptop, a failure in CI)."""
    from balancer.lab.netns import Lab
    from tests.bpf.conftest import require_bpf

    require_bpf()
    with Lab() as made:
        yield made
