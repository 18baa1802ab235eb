"""The console's paged routes: services one row each with problems first, a service's backends on demand, served
for real on loopback around the fake controller (``FakeController``: web has a down and a drained backend)."""

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.api import fake_controller, serving
from tests.api.fake_controller import FakeController


async def _get(http: aiohttp.ClientSession, url: str, **params: str) -> tuple[int, Any]:
    async with http.get(url, params=params) as response:
        return response.status, await response.json()


async def test_services_come_one_row_each_problems_first(base_url: str, http: aiohttp.ClientSession) -> None:
    code, body = await _get(http, f"{base_url}/api/v1/services")
    assert code == 200 and body["total"] == 4 and body["offset"] == 0
    rows = body["services"]
    assert [row["id"] for row in rows] == [
        "192.0.2.100:80/tcp",
        "[2001:db8::100]:80/tcp",
        "192.0.2.53:53/udp",
        "[2001:db8::53]:53/udp",
    ], "web's two VIPs first: each has 2 not serving"
    web = rows[0]
    assert (web["name"], web["up"], web["backends"], web["healthy"]) == ("web", True, 3, 1)
    assert (web["not_serving"], web["problems"]) == (2, 1), "one down (a problem), one drained (not one)"
    assert web["health"] == {"up": 2, "down": 1, "unknown": 0}
    assert web["packets"] > 0 and "time" in body


async def test_search_and_problems_narrow_the_rows(base_url: str, http: aiohttp.ClientSession) -> None:
    _, by_backend = await _get(http, f"{base_url}/api/v1/services", q="198.18.0.21")
    assert [row["name"] for row in by_backend["services"]] == ["dns"]
    _, every_word = await _get(http, f"{base_url}/api/v1/services", q="WEB 2001:db8")
    assert [row["id"] for row in every_word["services"]] == ["[2001:db8::100]:80/tcp"]
    _, problems = await _get(http, f"{base_url}/api/v1/services", problems="1")
    assert problems["total"] == 2 and {row["name"] for row in problems["services"]} == {"web"}
    _, nothing = await _get(http, f"{base_url}/api/v1/services", q="no-such-thing")
    assert (nothing["total"], nothing["services"]) == (0, [])


async def test_a_services_backends_come_not_serving_first(base_url: str, http: aiohttp.ClientSession) -> None:
    code, body = await _get(http, f"{base_url}/api/v1/backends", service="192.0.2.100:80/tcp")
    assert code == 200 and body["service"]["id"] == "192.0.2.100:80/tcp" and body["total"] == 3
    assert [(b["address"], b["dataplane"]) for b in body["backends"]] == [
        ("198.18.0.12", "removed: down"),
        ("198.18.0.13", "draining"),
        ("198.18.0.11", "active"),
    ]
    assert body["backends"][0]["key"] == "web/198.18.0.12", "the key the admin calls take"
    _, problems = await _get(http, f"{base_url}/api/v1/backends", service="192.0.2.100:80/tcp", problems="1")
    assert [b["address"] for b in problems["backends"]] == ["198.18.0.12"], "a drained backend is no problem"
    _, searched = await _get(http, f"{base_url}/api/v1/backends", service="192.0.2.100:80/tcp", q="refused")
    assert [b["address"] for b in searched["backends"]] == ["198.18.0.12"]


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "501"}, {"offset": "-1"}, {"limit": "ten"}])
async def test_a_bad_page_is_refused(base_url: str, http: aiohttp.ClientSession, params: dict[str, str]) -> None:
    code, body = await _get(http, f"{base_url}/api/v1/services", **params)
    assert code == 400 and body["error"].startswith("bad page")
    code, _ = await _get(http, f"{base_url}/api/v1/backends", service="192.0.2.100:80/tcp", **params)
    assert code == 400


async def test_an_unknown_service_is_404_and_none_is_400(base_url: str, http: aiohttp.ClientSession) -> None:
    code, body = await _get(http, f"{base_url}/api/v1/backends", service="192.0.2.1:80/tcp")
    assert code == 404 and "192.0.2.1:80/tcp" in body["error"]
    code, body = await _get(http, f"{base_url}/api/v1/backends")
    assert code == 400 and "?service=" in body["error"]


async def test_an_address_matches_whole(base_url: str, http: aiohttp.ClientSession) -> None:
    _, whole = await _get(http, f"{base_url}/api/v1/services", q="198.18.0.1")
    assert whole["total"] == 0, "198.18.0.1 is none of 198.18.0.11, .12, .13"
    _, found = await _get(http, f"{base_url}/api/v1/services", q="198.18.0.12")
    assert {row["name"] for row in found["services"]} == {"web"}
    _, vip = await _get(http, f"{base_url}/api/v1/services", q="2001:DB8::53")
    assert [row["id"] for row in vip["services"]] == ["[2001:db8::53]:53/udp"], "the VIP, in any spelling"


@pytest.fixture
async def scaled_url() -> AsyncIterator[str]:
    controller = fake_controller.ScaledController(100, 10)
    controller.down_every = 37
    async with serving.serve(controller) as (url, _):
        yield url


async def test_pages_at_a_thousand_backends(scaled_url: str, http: aiohttp.ClientSession) -> None:
    seen: list[dict[str, Any]] = []
    for offset in range(0, 100, 30):
        code, body = await _get(http, f"{scaled_url}/api/v1/services", offset=str(offset), limit="30")
        assert code == 200 and body["total"] == 100 and len(body["services"]) == min(30, 100 - offset)
        seen += body["services"]
    assert len({row["id"] for row in seen}) == 100, "every service once across the pages"
    not_serving = [row["not_serving"] for row in seen]
    assert not_serving == sorted(not_serving, reverse=True) and not_serving[0] > 0 and not_serving[-1] == 0
    code, body = await _get(http, f"{scaled_url}/api/v1/backends", service=seen[0]["id"], limit="2", offset="1")
    assert code == 200 and body["total"] == 10 and len(body["backends"]) == 2


async def test_the_summary_carries_what_the_console_charts(
    controller: FakeController, base_url: str, http: aiohttp.ClientSession
) -> None:
    controller.tick = 4
    _, body = await _get(http, f"{base_url}/api/v1/summary")
    assert body["health_transitions"] == {"up": 16, "down": 5}
    assert body["totals"]["rx_packets"] == 5000 + 1600 * 4 and body["flow_table_size"] == 65536
    assert [peer["address"] for peer in body["peer_sessions"]] == ["198.18.0.1", "2001:db8::1"]
    assert body["vips_withdrawn"] == [] and body["interfaces"] == {"eth0": "native"}
