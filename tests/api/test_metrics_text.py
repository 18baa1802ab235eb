"""``balancer.metrics_text`` writes what prometheus_client writes: our exposition, parsed and encoded again by
prometheus_client, comes out byte for byte the same, in both formats, label values needing escapes included."""

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.utils import floatToGoString

from balancer import metrics, metrics_text, status
from tests.api import fake_controller
from tests.api.fake_controller import FakeController

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


class _Parsed:
    """A prometheus_client collector yielding what a parser read."""

    def __init__(self, families: list[Any]) -> None:
        self._families = families

    def collect(self) -> Iterator[Any]:
        yield from self._families


def _again(families: Iterable[Any], encode: Any) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Parsed(list(families)))
    encoded: bytes = encode(registry)
    return encoded


class _Odd(FakeController):
    """The fake, with names that need escaping in label values and help-like text."""

    def snapshot(self) -> status.Snapshot:
        snapshot = super().snapshot()
        odd = 'we"b\\1\nx'
        services = tuple(dataclasses.replace(s, name=odd if s.name == "web" else s.name) for s in snapshot.services)
        return dataclasses.replace(snapshot, services=services, interfaces={'eth"0\\': "native"})


def _metrics(controller: FakeController) -> metrics.Metrics:
    collected = metrics.Metrics(controller, version="0.1.0")
    for service, backend in controller.running_config.backends():
        collected.observe_check(
            service.backend_key(backend), service.name, backend.address_text, "http", 0.0031, ok=True
        )
        collected.observe_check(service.backend_key(backend), 'svc"\\', backend.address_text, "tcp", 2.0, ok=False)
        collected.health_transition(service.name, str(backend.address), "up")
    collected.observe_schedule_lag(0.004)
    collected.loop_probe.observe(123456.789)
    return collected


CONTROLLERS: dict[str, Callable[[], FakeController]] = {
    "fake": FakeController,
    "odd names": _Odd,
    "scaled": lambda: fake_controller.ScaledController(6, 4),
}


@pytest.mark.parametrize("name", CONTROLLERS)
async def test_text_format_is_what_prometheus_client_writes(name: str) -> None:
    ours, content_type = await _metrics(CONTROLLERS[name]()).exposition("")
    assert content_type.startswith("text/plain; version=0.0.4")
    assert _again(parse_text(ours.decode()), generate_latest) == ours


@pytest.mark.parametrize("name", CONTROLLERS)
async def test_openmetrics_is_what_prometheus_client_writes(name: str) -> None:
    ours, content_type = await _metrics(CONTROLLERS[name]()).exposition(OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text")
    parsed = parse_openmetrics(ours.decode())  # type: ignore[no-untyped-call]
    assert _again(parsed, openmetrics_exposition.generate_latest) == ours


@pytest.mark.parametrize(
    "number",
    [
        0,
        1,
        -1,
        2,
        0.1,
        1e-7,
        5e-324,
        999_999.0,
        1e6,
        1_790_000_001.0,
        123456.789,
        1e16,
        -1e16,
        -1e17,
        2**64,
        math.inf,
        -math.inf,
        math.nan,
        3,
    ],
)
def test_values_are_formatted_as_go_does(number: float) -> None:
    assert metrics_text.value(number) == floatToGoString(number)  # type: ignore[no-untyped-call]


def test_extra_labels_go_where_sorting_puts_them() -> None:
    labels = metrics_text.Labels(["service", "vip", "backend"], extra="state")
    pieces = labels.pieces(["web", "192.0.2.1", "198.18.0.11"])
    assert labels.join(pieces) == '{backend="198.18.0.11",service="web",vip="192.0.2.1"}'
    assert (
        labels.join(pieces, metrics_text.label("state", "up"))
        == '{backend="198.18.0.11",service="web",state="up",vip="192.0.2.1"}'
    )
    assert metrics_text.Labels([]).render([]) == ""
