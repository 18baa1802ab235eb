"""Shared pieces of the end-to-end tests: requirements, config for tests, waiting, measured figures."""

import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from balancer.lab import demo_lab
from tests.bgp.bgp_support import need_bird
from tests.bpf.conftest import require_bpf
from tests.conftest import require_privileges

T = TypeVar("T")

FIGURES: dict[str, str] = {}
"""Measured figures, name -> value with unit; shown at the end of the run."""

# What the tests run instead of demo.yaml's 1 s checks: quicker verdicts, same rise/fall logic.
INTERVAL, TIMEOUT, RISE, FALL = 0.5, 0.25, 2, 2
MARGIN = 3.0  # seconds of slack on two shared, noisy cores
DOWN_WITHIN = FALL * INTERVAL + TIMEOUT + MARGIN
UP_WITHIN = RISE * INTERVAL + TIMEOUT + MARGIN


def require_e2e() -> None:
    """Skip on an unprivileged laptop; fail under CI=true."""
    require_privileges()
    require_bpf()
    need_bird()


def record(name: str, value: str) -> None:
    FIGURES[name] = value
    print(f"FIGURE {name}: {value}")


def wait_for(what: str, probe: Callable[[], T | Literal[False] | None], timeout: float, interval: float = 0.05) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds, naming ``what``."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {value!r})")
        time.sleep(interval)
        value = probe()
    return value


def e2e_config(
    demo: demo_lab.DemoLab, index: int, *, weights: dict[str, int] | None = None, backends: list[str] | None = None
) -> dict[str, Any]:
    """Node ``index``'s config with the tests' check timing, optional weights and backend list (host names)."""
    data = demo.node_config(index)
    data["policies"]["web"]["checks"][0]["timing"] = {
        "interval": INTERVAL,
        "timeout": TIMEOUT,
        "rise": RISE,
        "fall": FALL,
    }
    data["dataplane"] = {"flow_table_size": 4096} | {
        k: v for k, v in data.get("dataplane", {}).items() if k.startswith("tunnel_source")
    }
    names = backends if backends is not None else [host.name for host in demo.backends[:3]]
    data["services"][0]["backends"] = [
        {"address": demo.backend(name).ipv4, **({"weight": weights[name]} if weights and name in weights else {})}
        for name in names
    ]
    return data


def backends_by_name(demo: demo_lab.DemoLab, status: dict[str, Any], service: int = 0) -> dict[str, dict[str, Any]]:
    """The status API's backends of a service, keyed by lab host name."""
    names = {host.ipv4: host.name for host in demo.all_backends}
    return {names[b["address"]]: b for b in status["services"][service]["backends"]}
