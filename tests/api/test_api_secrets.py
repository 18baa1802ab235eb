"""What the API lets a reader see: redacted config, reload errors without values, optional read token, and a
malformed ``Authorization`` header refused with a 401."""

import asyncio
import dataclasses
import logging
from pathlib import Path

import aiohttp
import pytest

import config
from balancer import status
from tests.api import fake_controller, serving
from tests.api.fake_controller import FakeController


class _ReloadingController(FakeController):
    """Reloads from a file through the real loader and reports the error as the daemon does."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.error: str | None = None

    async def reload(self) -> status.ReloadResult:
        try:
            config.load_config(self.path)
        except config.ConfigError as error:
            self.error = str(error)
            return status.ReloadResult(False, self.running_config.digest(), self.error)
        return status.ReloadResult(True, self.running_config.digest(), "applied")

    def snapshot(self) -> status.Snapshot:
        return dataclasses.replace(super().snapshot(), last_reload_error=self.error)


async def test_a_rejected_reload_shows_no_value_of_a_secret(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    path = tmp_path / "xdplb.yaml"
    path.write_text(
        "interfaces: [eth0]\nbgp: {local_as: 65001, router_id: 192.0.2.1, peers: [{address: 198.18.0.1,"
        " peer_as: 65000, password: 20251201}]}\n"
    )
    controller = _ReloadingController(path)
    async with serving.serve(controller, snapshot_interval=0) as (base_url, _):
        async with http.post(f"{base_url}/api/v1/reload") as response:
            assert response.status == 400
            assert "20251201" not in await response.text()
        async with http.get(f"{base_url}/api/v1/status") as response:
            body = await response.json()
    assert "bgp.peers[0].password: input should be a valid string, got a number" in body["last_reload_error"]
    assert "20251201" not in str(body)


@pytest.fixture
def read_guarded(tmp_path: Path) -> FakeController:
    token = tmp_path / "token"
    token.write_text("read-token\n")
    text = fake_controller.CONFIG_YAML.replace("LISTEN", "127.0.0.1:9180").replace(
        "api: {", f'api: {{token_file: "{token}", read_token_required: true, '
    )
    return FakeController(config.parse_config(text, source="fake.yaml"))


@pytest.mark.parametrize("path", ["/api/v1/status", "/api/v1/summary", "/api/v1/config", "/metrics"])
async def test_read_endpoints_can_require_the_token(
    read_guarded: FakeController, http: aiohttp.ClientSession, path: str
) -> None:
    async with serving.serve(read_guarded) as (base_url, _):
        async with http.get(f"{base_url}{path}") as response:
            assert response.status == 401
            assert "md5-secret" not in await response.text()
        async with http.get(f"{base_url}{path}", headers={"Authorization": "Bearer wrong"}) as response:
            assert response.status == 401
        async with http.get(f"{base_url}{path}", headers={"Authorization": "Bearer read-token"}) as response:
            assert response.status == 200
        async with http.get(f"{base_url}/healthz") as response:  # probes carry no data and no token
            assert response.status == 200


def test_read_token_required_needs_a_token_file() -> None:
    with pytest.raises(config.ConfigError, match="api.token_file: required because read_token_required is true"):
        config.parse_config("interfaces: [eth0]\napi: {read_token_required: true}\n", source="x.yaml")


async def _raw(base_url: str, request: bytes) -> bytes:
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    return answer


@pytest.mark.parametrize("value", [b"Bearer s3cr\xe9t", b"Bearer \xff\xfe", "Bearer \u00e9\u20ac".encode()])
async def test_a_non_ascii_authorization_header_is_a_401(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, value: bytes
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    controller = FakeController(fake_controller.load(token_file=str(token)))
    caplog.set_level(logging.DEBUG)
    async with serving.serve(controller) as (base_url, _):
        answer = await _raw(
            base_url,
            b"POST /api/v1/reload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
            + value
            + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert controller.reloads["success"] == 1
