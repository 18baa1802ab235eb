"""``/metrics``: a golden exposition of the fake snapshot, Prometheus naming conventions, and collector behaviour.

Regenerate the golden file after an intended change with
``XDPLB_REGENERATE_GOLDEN=1 .venv/bin/python -m pytest tests/api/test_metrics.py`` and review the diff.
"""

import asyncio
import copy
import gzip
import dataclasses
import ipaddress
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from balancer import metrics, status
from tests.api import serving
from tests.api.fake_controller import FakeController

GOLDEN = Path(__file__).with_name("golden") / "metrics.txt"

# Every label any xdplb metric may carry: each is bounded by the configuration or by the code.
BOUNDED_LABELS = {
    "action",
    "backend",
    "check",
    "counter",
    "digest",
    "family",
    "interface",
    "le",
    "mode",
    "peer",
    "port",
    "proto",
    "reason",
    "result",
    "service",
    "state",
    "version",
    "vip",
}


def _feed_events(collected: metrics.Metrics) -> None:
    collected.observe_check("web/198.18.0.11", "web", "198.18.0.11", "http", 0.0031, ok=True)
    collected.observe_check("web/198.18.0.11", "web", "198.18.0.11", "http", 0.0042, ok=True)
    collected.observe_check("web/198.18.0.12", "web", "198.18.0.12", "http", 1.0, ok=False)
    collected.health_transition("web", "198.18.0.12", "down")
    collected.observe_schedule_lag(0.0004)
    collected.observe_schedule_lag(0.03)
    collected.loop_probe.observe(0.0007)
    collected.loop_probe.observe(0.012)


async def _scrape(controller: FakeController, http: aiohttp.ClientSession, *, events: bool = True) -> str:
    async with serving.serve(controller) as (base_url, collected):
        if events:
            _feed_events(collected)
        async with http.get(f"{base_url}/metrics") as response:
            assert response.status == 200
            assert response.content_type == "text/plain"
            return await response.text()


async def test_exposition_matches_the_golden_file(controller: FakeController, http: aiohttp.ClientSession) -> None:
    text = await _scrape(controller, http)
    if os.environ.get("XDPLB_REGENERATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "exposition changed: regenerate with XDPLB_REGENERATE_GOLDEN=1 and review"


async def test_names_follow_prometheus_conventions(controller: FakeController, http: aiohttp.ClientSession) -> None:
    families = list(text_string_to_metric_families(await _scrape(controller, http)))
    assert len(families) > 30
    configured = {str(address) for _, backend in controller.running_config.backends() for address in [backend.address]}
    configured |= {str(vip) for service in controller.running_config.services for vip in service.vips}
    configured |= {str(peer.address) for peer in controller.running_config.bgp.peers}  # type: ignore[union-attr]
    for family in families:
        assert re.fullmatch(r"xdplb_[a-z0-9_]+", family.name), family.name
        assert family.documentation, f"{family.name} has no HELP"
        if family.type == "counter":
            assert all(sample.name.endswith(("_total", "_created")) for sample in family.samples), family.name
        else:
            assert not family.name.endswith("_total"), f"{family.name} is a {family.type} named like a counter"
        if re.search(r"(time|timestamp|duration|latency)", family.name):
            assert family.name.endswith("_seconds"), f"{family.name}: time is in seconds"
        assert not re.search(r"_(ms|milliseconds|kb|mb|percent)(_|$)", family.name), family.name
        for sample in family.samples:
            assert set(sample.labels) <= BOUNDED_LABELS, f"{sample.name} has unbounded labels {set(sample.labels)}"
            for value in sample.labels.values():
                try:
                    address = ipaddress.ip_address(value)
                except ValueError:
                    continue
                assert str(address) in configured, f"{sample.name}: {value} is not a configured address"


async def test_every_suggested_family_is_there(controller: FakeController, http: aiohttp.ClientSession) -> None:
    names = {family.name for family in text_string_to_metric_families(await _scrape(controller, http))}
    assert names >= {
        "xdplb_backend_up",
        "xdplb_backend_weight",
        "xdplb_backend_admin_state",
        "xdplb_service_up",
        "xdplb_service_healthy_backends",
        "xdplb_service_packets",
        "xdplb_service_bytes",
        "xdplb_service_new_flows",
        "xdplb_backend_packets",
        "xdplb_backend_bytes",
        "xdplb_backend_new_flows",
        "xdplb_dropped_packets",
        "xdplb_packets",
        "xdplb_flow_table_entries",
        "xdplb_flow_table_size",
        "xdplb_vip_announced",
        "xdplb_bgp_session_up",
        "xdplb_bgp_routes_sent",
        "xdplb_config_reloads",
        "xdplb_config_last_reload_success_timestamp_seconds",
        "xdplb_build_info",
        "xdplb_healthcheck_duration_seconds",
        "xdplb_healthcheck_failures",
        "xdplb_backend_state_transitions",
        "xdplb_healthcheck_schedule_lag_seconds",
        "xdplb_event_loop_stall_seconds",
        "xdplb_event_loop_stall_seconds_max",
    }


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"no sample {name} {labels}")


async def test_events_land_in_histogram_and_counter_with_addresses(
    controller: FakeController, http: aiohttp.ClientSession
) -> None:
    text = await _scrape(controller, http)
    web = {"service": "web", "check": "http"}  # durations per service and check type, not per backend
    assert _sample(text, "xdplb_healthcheck_duration_seconds_count", **web) == 3
    assert _sample(text, "xdplb_healthcheck_duration_seconds_sum", **web) == pytest.approx(1.0073)
    assert _sample(text, "xdplb_healthcheck_duration_seconds_bucket", **web, le="0.0025") == 0
    assert _sample(text, "xdplb_healthcheck_duration_seconds_bucket", **web, le="0.005") == 2
    assert _sample(text, "xdplb_healthcheck_duration_seconds_bucket", **web, le="1.0") == 3
    assert _sample(text, "xdplb_healthcheck_failures_total", **web, backend="198.18.0.12") == 1
    assert _sample(text, "xdplb_healthcheck_failures_total", **web, backend="198.18.0.11") == 0  # from its first run
    assert _sample(text, "xdplb_backend_state_transitions_total", backend="198.18.0.12", state="down") == 1


async def test_schedule_lag_and_loop_stalls_are_exported(
    controller: FakeController, http: aiohttp.ClientSession
) -> None:
    text = await _scrape(controller, http)
    assert _sample(text, "xdplb_healthcheck_schedule_lag_seconds_count") == 2
    assert _sample(text, "xdplb_healthcheck_schedule_lag_seconds_bucket", le="0.001") == 1
    assert _sample(text, "xdplb_healthcheck_schedule_lag_seconds_bucket", le="0.05") == 2
    assert _sample(text, "xdplb_event_loop_stall_seconds_bucket", le="0.01") == 1
    assert _sample(text, "xdplb_event_loop_stall_seconds_max") == 0.012


async def test_a_running_probe_reports_a_stalled_loop(controller: FakeController) -> None:
    collected = metrics.Metrics(controller, version="0.1.0")
    collected.loop_probe.start()
    try:
        await asyncio.sleep(0.03)
        time.sleep(0.15)
        await asyncio.sleep(0.03)
    finally:
        await collected.loop_probe.stop()
    text = collected.render().decode()
    assert _sample(text, "xdplb_event_loop_stall_seconds_max") >= 0.13
    assert _sample(text, "xdplb_event_loop_stall_seconds_count") >= 3


def test_a_check_run_is_labelled_with_the_address_it_is_given(controller: FakeController) -> None:
    collected = metrics.Metrics(controller, version="0.1.0")
    collected.observe_check("gone/198.18.0.99", "gone", "198.18.0.99", "tcp", 0.001, ok=False)
    text = collected.render().decode()
    assert _sample(text, "xdplb_healthcheck_failures_total", backend="198.18.0.99", service="gone") == 1


def test_scrape_reflects_the_current_snapshot(controller: FakeController) -> None:
    collected = metrics.Metrics(controller, version="0.1.0")
    web = {"service": "web", "vip": "192.0.2.100", "backend": "198.18.0.11"}
    assert _sample(collected.render().decode(), "xdplb_backend_admin_state", **web, state="enabled") == 1
    controller.overrides["web/198.18.0.11"] = controller.running_config.services[0].backends[2].state  # drained
    controller.tick = 10
    text = collected.render().decode()
    assert _sample(text, "xdplb_backend_admin_state", **web, state="drained") == 1
    assert _sample(text, "xdplb_backend_admin_state", **web, state="enabled") == 0
    assert _sample(text, "xdplb_backend_packets_total", **web) == (1000 + 1200 * 10) * 3
    assert controller.snapshots == 2  # one snapshot per scrape, no caching, no background reads


def test_check_path_counters_are_there_only_when_checks_go_through_the_data_path(controller: FakeController) -> None:
    text = metrics.Metrics(controller, version="0.1.0").render().decode()
    assert _sample(text, "xdplb_check_path_packets_total", counter="unknown") == 1
    assert _sample(text, "xdplb_check_path_packets_total", counter="replies") == 38
    frozen = _FrozenController()
    frozen.fixed = dataclasses.replace(frozen.fixed, check_paths={})
    assert "xdplb_check_path" not in metrics.Metrics(frozen, version="0.1.0").render().decode()


class _FrozenController(FakeController):
    """Returns one fixed snapshot object, optionally with services and backends in another order."""

    def __init__(self, shuffle: int | None = None) -> None:
        super().__init__()
        snapshot = super().snapshot()
        if shuffle is not None:
            rng = random.Random(shuffle)
            services = [
                dataclasses.replace(s, backends=tuple(rng.sample(s.backends, len(s.backends))))
                for s in snapshot.services
            ]
            snapshot = dataclasses.replace(
                snapshot,
                services=tuple(rng.sample(services, len(services))),
                vips=tuple(rng.sample(snapshot.vips, len(snapshot.vips))),
                peers=tuple(reversed(snapshot.peers)),
                totals=dict(rng.sample(list(snapshot.totals.items()), len(snapshot.totals))),
            )
        self.fixed = snapshot

    def snapshot(self) -> status.Snapshot:
        return self.fixed


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_output_order_does_not_depend_on_snapshot_order(seed: int) -> None:
    reference = metrics.Metrics(_FrozenController(), version="0.1.0").render()
    assert metrics.Metrics(_FrozenController(shuffle=seed), version="0.1.0").render() == reference


def test_collector_does_not_mutate_the_snapshot() -> None:
    controller = _FrozenController()
    before = copy.deepcopy(controller.fixed)
    collected = metrics.Metrics(controller, version="0.1.0")
    collected.render()
    collected.render()
    assert controller.fixed == before


class _BrokenController(FakeController):
    def snapshot(self) -> status.Snapshot:
        raise RuntimeError("maps gone")


async def test_failing_snapshot_still_serves_the_static_metrics(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="balancer.metrics"):
        text = await _scrape(_BrokenController(), http, events=False)
    names = {family.name for family in text_string_to_metric_families(text)}
    assert "xdplb_build_info" in names and "xdplb_backend_up" not in names
    assert "event=metrics_snapshot_failed" in caplog.text


async def test_openmetrics_is_served_when_asked_and_parses(
    controller: FakeController, http: aiohttp.ClientSession
) -> None:
    async with serving.serve(controller) as (base_url, collected):
        _feed_events(collected)
        headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
        async with http.get(f"{base_url}/metrics", headers=headers) as response:
            assert response.status == 200
            assert response.content_type == "application/openmetrics-text"
            text = await response.text()
    assert text.endswith("# EOF\n")
    families = {family.name: family for family in parse_openmetrics(text)}  # type: ignore[no-untyped-call]
    assert families["xdplb_service_packets"].type == "counter"
    assert families["xdplb_healthcheck_duration_seconds"].type == "histogram"


class _ThreadRecording(FakeController):
    def __init__(self) -> None:
        super().__init__()
        self.read_in: list[int] = []
        self.assembled_in: list[int] = []

    def snapshot_builder(self) -> Callable[[], status.Snapshot]:
        self.read_in.append(threading.get_ident())
        return self.snapshot

    def snapshot(self) -> status.Snapshot:
        self.assembled_in.append(threading.get_ident())
        return super().snapshot()


async def test_scrape_reads_the_state_once_on_the_event_loop_and_assembles_elsewhere(
    http: aiohttp.ClientSession,
) -> None:
    controller = _ThreadRecording()
    text = await _scrape(controller, http)
    assert controller.read_in == [threading.get_ident()]  # the reads on the loop's thread
    assert len(controller.assembled_in) == 1 and controller.assembled_in[0] != threading.get_ident()
    assert _sample(text, "xdplb_healthcheck_duration_seconds_count", service="web", check="http") == 3


async def test_gzip_when_asked_and_plain_otherwise(controller: FakeController) -> None:
    async with serving.serve(controller) as (base_url, collected):
        _feed_events(collected)
        async with aiohttp.ClientSession(auto_decompress=False) as raw:
            async with raw.get(f"{base_url}/metrics", headers={"Accept-Encoding": "gzip"}) as response:
                assert response.headers["Content-Encoding"] == "gzip"
                compressed = await response.read()
            async with raw.get(f"{base_url}/metrics", headers={"Accept-Encoding": "identity"}) as response:
                assert "Content-Encoding" not in response.headers
                plain = await response.read()
    assert gzip.decompress(compressed) == plain == GOLDEN.read_bytes()


def test_forget_drops_the_event_series_of_removed_backends(controller: FakeController) -> None:
    collected = metrics.Metrics(controller, version="0.1.0")
    _feed_events(collected)
    text = collected.render().decode()
    assert _sample(text, "xdplb_healthcheck_failures_total", backend="198.18.0.12") == 1
    collected.forget([])
    collected.forget([("web/198.18.0.12", "web", "198.18.0.12")])
    collected.observe_check("web/198.18.0.11", "web", "198.18.0.11", "http", 0.001, ok=True)
    text = collected.render().decode()
    assert _sample(text, "xdplb_healthcheck_failures_total", backend="198.18.0.11") == 0
    with pytest.raises(AssertionError, match="no sample"):
        _sample(text, "xdplb_healthcheck_failures_total", backend="198.18.0.12")
    with pytest.raises(AssertionError, match="no sample"):
        _sample(text, "xdplb_backend_state_transitions_total", backend="198.18.0.12")
    assert _sample(text, "xdplb_healthcheck_duration_seconds_count", service="web") == 4  # per service: kept
