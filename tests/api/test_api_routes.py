"""Every route of the API, served for real on loopback around a fake controller."""

import dataclasses
import errno
import json
import logging
import os
import re
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp
import yarl
import pytest

import config
from balancer import api, metrics, status
from tests.api import fake_controller, serving
from tests.api.fake_controller import FakeController


async def test_healthz_says_ok_only_once_ready(
    controller: FakeController, base_url: str, http: aiohttp.ClientSession
) -> None:
    controller.ready = False
    async with http.get(f"{base_url}/healthz") as response:
        assert (response.status, await response.text()) == (503, "starting\n")
    controller.ready = True
    async with http.get(f"{base_url}/healthz") as response:
        assert (response.status, await response.text()) == (200, "ok\n")


async def test_healthz_builds_no_snapshot(
    controller: FakeController, base_url: str, http: aiohttp.ClientSession
) -> None:
    for _ in range(3):
        async with http.get(f"{base_url}/healthz") as response:
            assert response.status == 200
    assert controller.snapshots == 0  # answered from Controller.ready: O(1) however many backends


async def test_status_is_the_snapshot_as_json_with_the_server_time(
    controller: FakeController, base_url: str, http: aiohttp.ClientSession
) -> None:
    before = time.time()
    async with http.get(f"{base_url}/api/v1/status") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        body = await response.json()
    assert before <= body.pop("time") <= time.time()
    assert body == json.loads(json.dumps(status.to_json(controller.snapshot())))
    down = [b for s in body["services"] for b in s["backends"] if b["health"] == "down"]
    assert {(b["key"], b["reason"]) for b in down} == {("web/198.18.0.12", "connection refused")}
    assert [p["address"] for p in body["peers"]] == ["198.18.0.1", "2001:db8::1"]
    assert body["config_digest"] == controller.running_config.digest()


async def test_summary_counts_what_the_status_lists(
    controller: FakeController, base_url: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{base_url}/api/v1/summary") as response:
        assert (response.status, response.content_type) == (200, "application/json")
        body = await response.json()
    async with http.get(f"{base_url}/api/v1/status") as response:
        full = await response.json()
    backends = [(s, b) for s in full["services"] for b in s["backends"]]
    assert body["backends"]["total"] == len(backends)
    assert sum(body["backends"]["health"].values()) == len(backends)
    assert body["backends"]["health"].get("down") == sum(1 for _, b in backends if b["health"] == "down")
    not_serving = [b["key"] for _, b in backends if b["dataplane"] != "active"]
    assert (body["not_serving_total"], [b["key"] for b in body["not_serving"]]) == (len(not_serving), not_serving)
    assert body["vips"] == {"total": len(full["vips"]), "announced": sum(v["announced"] for v in full["vips"])}
    assert body["peers"]["total"] == len(full["peers"]) and body["ready"] == full["ready"]


def test_summary_lists_a_bounded_number_of_backends(controller: FakeController) -> None:
    snapshot = controller.snapshot()
    service = snapshot.services[0]
    many = tuple(
        dataclasses.replace(service.backends[0], key=f"web/198.18.1.{i}", dataplane="removed: down")
        for i in range(status.SUMMARY_NOT_SERVING_LIMIT + 20)
    )
    big = dataclasses.replace(snapshot, services=(dataclasses.replace(service, backends=many),))
    body = status.summary(big)
    assert body["not_serving_total"] == len(many)
    assert len(body["not_serving"]) == status.SUMMARY_NOT_SERVING_LIMIT


async def test_config_is_the_running_one_with_secrets_redacted(
    controller: FakeController, base_url: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{base_url}/api/v1/config") as response:
        assert response.status == 200
        text = await response.text()
    body = json.loads(text)
    assert body["digest"] == controller.running_config.digest()
    assert body["source"] == "/etc/xdplb/fake.yaml"
    assert "md5-secret" not in text and "backend-secret" not in text
    peers = body["config"]["bgp"]["peers"]
    assert [p["password"] for p in peers] == [None, "<redacted>"]
    headers = body["config"]["services"][0]["checks"][0]["headers"]
    assert headers == {"Authorization": "<redacted>", "Host": "www.example.com"}
    # everything else is the dump itself
    expected = controller.running_config.model_dump(mode="json")
    expected["bgp"]["peers"][1]["password"] = "<redacted>"
    expected["services"][0]["checks"][0]["headers"]["Authorization"] = "<redacted>"
    expected["dataplane"]["hash_seed"] = "<redacted>"  # with it, the backend of a flow can be predicted
    assert body["config"] == expected


async def test_reload_answers_200_with_the_result(
    controller: FakeController, base_url: str, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{base_url}/api/v1/reload") as response:
        assert response.status == 200
        body = await response.json()
    assert body == {"ok": True, "config_digest": controller.running_config.digest(), "message": "applied: no changes"}
    assert controller.reloads["success"] == 2


async def test_failed_reload_answers_400_with_the_errors(
    controller: FakeController, base_url: str, http: aiohttp.ClientSession
) -> None:
    digest = controller.running_config.digest()
    errors = "xdplb.yaml: services[0].port: port 0 is not in 1..65535 (line 7)"
    controller.next_reload = status.ReloadResult(ok=False, config_digest=digest, message=errors)
    async with http.post(f"{base_url}/api/v1/reload") as response:
        assert response.status == 400
        body = await response.json()
    assert body == {"ok": False, "config_digest": digest, "message": errors}
    async with http.get(f"{base_url}/api/v1/status") as response:
        assert (await response.json())["reloads"] == {"success": 1, "failure": 1}


@pytest.mark.parametrize(
    ("action", "state"),
    [
        ("drain", config.AdminState.DRAINED),
        ("disable", config.AdminState.DISABLED),
        ("enable", config.AdminState.ENABLED),
    ],
)
async def test_admin_actions_override_the_state(
    controller: FakeController, base_url: str, http: aiohttp.ClientSession, action: str, state: config.AdminState
) -> None:
    async with http.post(f"{base_url}/api/v1/backends/web/198.18.0.11/{action}") as response:
        assert response.status == 200
        body = await response.json()
    assert controller.admin_calls == [("web/198.18.0.11", state)]
    assert body == {"key": "web/198.18.0.11", "action": action, "admin": state.value, "admin_override": state.value}


async def test_reset_clears_the_override(
    controller: FakeController, base_url: str, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{base_url}/api/v1/backends/web/198.18.0.13/enable") as response:
        assert (await response.json())["admin"] == "enabled"
    async with http.post(f"{base_url}/api/v1/backends/web/198.18.0.13/reset") as response:
        assert response.status == 200
        body = await response.json()
    assert body["admin"] == "drained" and body["admin_override"] is None  # the file says drained
    assert controller.admin_calls[-1] == ("web/198.18.0.13", None)


@pytest.mark.parametrize("encode", [False, True], ids=["raw", "percent-encoded"])
async def test_keys_with_slashes_brackets_and_colons_route(
    controller: FakeController, base_url: str, http: aiohttp.ClientSession, encode: bool
) -> None:
    key = "[2001:db8::53]:53/udp/2001:db8::21"
    path = quote(key, safe="") if encode else key
    url = yarl.URL(f"{base_url}/api/v1/backends/{path}/drain", encoded=True)
    async with http.post(url) as response:
        assert response.status == 200, await response.text()
    assert controller.admin_calls == [(key, config.AdminState.DRAINED)]


async def test_unknown_backend_is_404_and_changes_nothing(
    controller: FakeController, base_url: str, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{base_url}/api/v1/backends/web/198.18.0.99/drain") as response:
        assert response.status == 404
        assert await response.json() == {"error": "no backend 'web/198.18.0.99'"}
    assert controller.admin_calls == [] and controller.overrides == {}


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("POST", "/api/v1/backends/web/198.18.0.11/explode", 404),
        ("POST", "/api/v1/backends/drain", 404),
        ("GET", "/api/v1/backends/web/198.18.0.11/drain", 405),
        ("GET", "/api/v1/reload", 405),
        ("POST", "/api/v1/status", 405),
        ("GET", "/api/v2/status", 404),
    ],
)
async def test_wrong_method_or_path(
    controller: FakeController, base_url: str, http: aiohttp.ClientSession, method: str, path: str, code: int
) -> None:
    async with http.request(method, f"{base_url}{path}") as response:
        assert response.status == code
    assert controller.admin_calls == []


async def test_loopback_without_token_refuses_cross_origin_and_rebinding(
    controller: FakeController, base_url: str, http: aiohttp.ClientSession
) -> None:
    url = f"{base_url}/api/v1/backends/web/198.18.0.11/drain"
    async with http.post(url, headers={"Origin": "http://evil.example"}) as response:
        assert response.status == 403
    async with http.post(url, headers={"Host": "evil.example:9180"}) as response:  # DNS rebinding
        assert response.status == 403
    async with http.post(url, headers={"Origin": "null"}) as response:
        assert response.status == 403
    assert controller.admin_calls == []
    async with http.post(url, headers={"Origin": base_url}) as response:  # the console itself
        assert response.status == 200
    async with http.post(url, headers={"Host": "localhost"}) as response:
        assert response.status == 200
    assert len(controller.admin_calls) == 2


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("s3cret-token\n")
    return path


async def test_configured_token_is_required_even_on_loopback(token_file: Path, http: aiohttp.ClientSession) -> None:
    controller = FakeController(fake_controller.load(token_file=str(token_file)))
    async with serving.serve(controller) as (base_url, _):
        url = f"{base_url}/api/v1/backends/web/198.18.0.11/drain"
        async with http.post(url) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.post(url, headers={"Authorization": "Bearer wrong"}) as response:
            assert response.status == 401
        async with http.post(f"{base_url}/api/v1/reload", headers={"Authorization": "Basic s3cret-token"}) as response:
            assert response.status == 401
        assert controller.admin_calls == [] and controller.reloads["success"] == 1
        async with http.post(url, headers={"Authorization": "Bearer s3cret-token"}) as response:
            assert response.status == 200
        async with http.post(f"{base_url}/api/v1/reload", headers={"Authorization": "Bearer s3cret-token"}) as response:
            assert response.status == 200
        # a new token takes effect without a restart
        token_file.write_text("rotated\n")
        async with http.post(url, headers={"Authorization": "Bearer s3cret-token"}) as response:
            assert response.status == 401
        async with http.post(url, headers={"Authorization": "Bearer rotated"}) as response:
            assert response.status == 200
        # a token file gone missing refuses everything (fail closed)
        token_file.unlink()
        async with http.post(url, headers={"Authorization": "Bearer rotated"}) as response:
            assert response.status == 503
        # reads stay open
        async with http.get(f"{base_url}/api/v1/status") as response:
            assert response.status == 200
    assert len(controller.admin_calls) == 2


async def test_not_loopback_needs_the_token(token_file: Path, http: aiohttp.ClientSession) -> None:
    controller = FakeController(fake_controller.load(listen="192.0.2.1:9180", token_file=str(token_file)))
    async with serving.serve_pretending(controller, "192.0.2.1") as base_url:
        url = f"{base_url}/api/v1/backends/web/198.18.0.11/disable"
        async with http.post(url) as response:
            assert response.status == 401
        async with http.post(url, headers={"Authorization": "Bearer s3cret-token"}) as response:
            assert response.status == 200
    assert controller.admin_calls == [("web/198.18.0.11", config.AdminState.DISABLED)]


async def test_not_loopback_without_token_refuses_admin(http: aiohttp.ClientSession) -> None:
    # The config forbids this; the API refuses anyway if the app is bound elsewhere than the config says.
    controller = FakeController()
    async with serving.serve_pretending(controller, "0.0.0.0") as base_url:
        async with http.post(f"{base_url}/api/v1/reload") as response:
            assert response.status == 403
        async with http.get(f"{base_url}/api/v1/status") as response:
            assert response.status == 200
    assert controller.reloads["success"] == 1


async def test_server_lifecycle_order_and_idempotent_cleanup(
    controller: FakeController, http: aiohttp.ClientSession
) -> None:
    server = api.ApiServer(controller, metrics=metrics.Metrics(controller), port=0)
    assert str(server.host) == "127.0.0.1"  # from the config's api.listen
    with pytest.raises(api.ApiError, match=r"call setup\(\) before start\(\)"):
        await server.start()
    await server.cleanup()  # nothing set up: fine
    await server.setup()
    await server.cleanup()  # set up, never started: fine
    await server.setup()
    await server.start()
    assert server.ready.is_set() and server.port != 0
    async with http.get(f"{server.url}/healthz") as response:
        assert response.status == 200
    await server.cleanup()
    await server.cleanup()
    assert not server.ready.is_set()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(f"{server.url}/healthz"):
            pass


async def test_serves_on_ipv6_loopback(controller: FakeController, http: aiohttp.ClientSession) -> None:
    try:
        async with serving.serve(controller, host="::1") as (base_url, _):
            assert base_url.startswith("http://[::1]:")
            async with http.post(f"{base_url}/api/v1/backends/dns/198.18.0.21/drain") as response:
                assert response.status == 200  # [::1] is loopback: open without a token
    except OSError as error:  # no IPv6 on this host: a laptop may lack it, CI must not
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and ::1 cannot be served: {error}")
        pytest.skip(f"no ::1: {error}")


async def test_reload_raising_a_config_error_is_a_400_too(
    controller: FakeController, base_url: str, http: aiohttp.ClientSession
) -> None:
    async def refuse() -> status.ReloadResult:
        raise config.ConfigError("xdplb.yaml", [("services[0].port", "not a port")])

    controller.reload = refuse  # type: ignore[method-assign]
    async with http.post(f"{base_url}/api/v1/reload") as response:
        assert response.status == 400
        body = await response.json()
    assert body == {
        "ok": False,
        "config_digest": controller.running_config.digest(),
        "message": "xdplb.yaml: services[0].port: not a port",
    }


async def test_requests_are_logged_as_key_value_events(
    controller: FakeController, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        async with serving.serve(controller) as (base_url, _):
            async with http.get(f"{base_url}/healthz") as response:
                assert response.status == 200
            async with http.post(f"{base_url}/api/v1/backends/web/198.18.0.11/drain") as response:
                assert response.status == 200
    request = r'event=http_request remote=127\.0\.0\.1 request="GET /healthz HTTP/1\.1" status=200 '
    assert re.search(request, caplog.text)
    assert "event=api_admin backend=web/198.18.0.11 action=drain remote=127.0.0.1" in caplog.text
    assert "event=api_listening host=127.0.0.1 port=" in caplog.text


async def test_busy_port_fails_start_with_the_os_error_and_cleans_up(controller: FakeController) -> None:
    async with serving.serve(controller) as (base_url, _):
        port = int(base_url.rsplit(":", 1)[1])
        server = api.ApiServer(controller, metrics=metrics.Metrics(controller), port=port)
        await server.setup()
        with pytest.raises(OSError) as raised:
            await server.start()
        assert raised.value.errno == errno.EADDRINUSE
        assert not server.ready.is_set()
        await server.cleanup()


def test_to_json_is_the_snapshot_as_dataclasses_see_it() -> None:
    snapshot = fake_controller.ScaledController(3, 4).snapshot()
    assert json.dumps(status.to_json(snapshot)) == json.dumps(dataclasses.asdict(snapshot))
    assert status.to_json(config.AdminState.DRAINED) == "drained"
