"""What a backend and a service cost in series, counted on rendered expositions; ``README-api.md`` quotes these.

The fake is ``ScaledController`` (one HTTP check per backend) after a settled start: every backend checked and
gone up once. Counts come from differences between expositions, so the fixed part (daemon, data plane, BGP
peers) cancels out.
"""

import re
from pathlib import Path

import pytest

from balancer import metrics
from tests.api import fake_controller

README = Path(metrics.__file__).with_name("README-api.md")

SERIES_PER_BACKEND = 16
"""A backend of a service with one VIP and one check type: 14 from the snapshot, 1 failure counter, 1 transition."""
SERIES_PER_SERVICE = 27
"""A service with a VIP of its own and one check type, without its backends: 9 from the snapshot, 17 for the
check-duration histogram (14 buckets, +Inf, _sum, _count), 1 for the VIP's route."""


def _series(services: int, backends: int) -> int:
    controller = fake_controller.ScaledController(services, backends, ports_per_vip=1)
    collected = metrics.Metrics(controller, version="0.1.0")
    for service, backend in controller.running_config.backends():
        collected.observe_check(
            service.backend_key(backend), service.name, backend.address_text, "http", 0.002, ok=True
        )
        collected.health_transition(service.name, str(backend.address), "up")
    text = collected.render().decode()
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


@pytest.mark.parametrize(("services", "backends"), [(4, 3), (10, 10)])
def test_series_per_backend_and_per_service(services: int, backends: int) -> None:
    base = _series(services, backends)
    assert (_series(services, 2 * backends) - base) == SERIES_PER_BACKEND * services * backends
    per_service = (_series(2 * services, backends) - base) / services - backends * SERIES_PER_BACKEND
    assert per_service == SERIES_PER_SERVICE


def test_the_documented_counts_are_these() -> None:
    text = README.read_text()
    assert re.search(rf"\b{SERIES_PER_BACKEND} series per backend\b", text)
    assert re.search(rf"\b{SERIES_PER_SERVICE} per service\b", text)
