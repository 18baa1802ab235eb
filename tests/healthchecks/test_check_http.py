"""HTTP and HTTPS checks against real loopback servers; every case runs on both engines (lean and aiohttp)."""

import asyncio
import pathlib
import re
from typing import Any

import pytest

import config
import healthchecks
from tests.healthchecks import hc_servers

LOOPBACK = hc_servers.LOOPBACK
FAST = {"timing": {"timeout": 0.5, "interval": 1}}


@pytest.fixture(params=["lean", "aiohttp"])
def engine(request: pytest.FixtureRequest) -> healthchecks.HttpEngine:
    return request.param  # type: ignore[no-any-return]


def http(**fields: Any) -> config.HttpCheck:
    return config.HttpCheck.model_validate({**FAST, **fields})


async def probe(check: config.HttpCheck, port: int, engine: healthchecks.HttpEngine) -> healthchecks.CheckResult:
    return await healthchecks.probe(check, LOOPBACK, port, http_engine=engine)


async def test_status_in_range_passes(http_app: hc_servers.HttpApp, engine: healthchecks.HttpEngine) -> None:
    result = await probe(http(path="/ok"), http_app.port, engine)
    assert (result.ok, result.reason) == (True, "status 200")
    assert 0 < result.duration < 0.5


@pytest.mark.parametrize(
    ("path", "expect", "ok", "reason"),
    [
        ("/status/503", "200-299", False, "status 503, expected 200-299"),
        ("/status/503", "200-299,503", True, "status 503"),
        ("/status/404", "200,301-302", False, "status 404, expected 200,301-302"),
        ("/redirect", "200", False, "status 301, expected 200"),  # redirects are not followed
        ("/redirect", "200-299,301", True, "status 301"),
    ],
)
async def test_expected_status_lists_and_ranges(
    http_app: hc_servers.HttpApp, engine: healthchecks.HttpEngine, path: str, expect: str, ok: bool, reason: str
) -> None:
    result = await probe(http(path=path, expect_status=expect), http_app.port, engine)
    assert (result.ok, result.reason) == (ok, reason)
    assert len(http_app.requests) == 1  # one request, no redirect followed


async def test_method_host_and_headers_are_sent(http_app: hc_servers.HttpApp, engine: healthchecks.HttpEngine) -> None:
    check = http(path="/ok", method="HEAD", host="svc.example", headers={"X-Probe": "xdplb", "User-Agent": "mine"})
    result = await probe(check, http_app.port, engine)
    assert result.ok, result.reason
    request = http_app.requests[-1]
    assert request.method == "HEAD"
    assert request.headers["Host"] == "svc.example"
    assert request.headers["X-Probe"] == "xdplb"
    assert request.headers["User-Agent"] == "mine"


async def test_default_host_header_is_address_and_port(
    http_app: hc_servers.HttpApp, engine: healthchecks.HttpEngine
) -> None:
    await probe(http(path="/ok"), http_app.port, engine)
    assert http_app.requests[-1].headers["Host"] == f"127.0.0.1:{http_app.port}"


@pytest.mark.parametrize(
    ("fields", "ok", "reason"),
    [
        ({"expect_body": "alive"}, True, "status 200"),
        ({"expect_body": "dead"}, False, "body mismatch: no 'dead'"),
        ({"expect_body_regex": r"service is \w+"}, True, "status 200"),
        ({"expect_body_regex": r"^dead"}, False, "body mismatch: no match for /^dead/"),
    ],
)
async def test_body_substring_and_regex(
    http_app: hc_servers.HttpApp, engine: healthchecks.HttpEngine, fields: dict[str, str], ok: bool, reason: str
) -> None:
    result = await probe(http(path="/ok", **fields), http_app.port, engine)
    assert (result.ok, result.reason) == (ok, reason)


async def test_chunked_body_is_decoded(http_app: hc_servers.HttpApp, engine: healthchecks.HttpEngine) -> None:
    result = await probe(http(path="/chunked", expect_body="service is alive"), http_app.port, engine)
    assert (result.ok, result.reason) == (True, "status 200")


async def test_huge_body_is_read_only_up_to_the_limit(
    http_app: hc_servers.HttpApp, engine: healthchecks.HttpEngine
) -> None:
    # The word is at the end of 10 MB: past max_body_bytes, so the check fails fast instead of reading it all.
    result = await probe(http(path="/huge", expect_body="needle", max_body_bytes=4096), http_app.port, engine)
    assert not result.ok
    assert result.reason == "body mismatch: no 'needle' (first 4096 bytes)"
    assert result.duration < 0.5
    only_status = await probe(http(path="/huge"), http_app.port, engine)
    assert (only_status.ok, only_status.reason) == (True, "status 200")


async def test_sidecar_port_is_probed_instead_of_the_service_port(
    http_app: hc_servers.HttpApp, engine: healthchecks.HttpEngine
) -> None:
    check = http(path="/ok", port=http_app.port)
    result = await healthchecks.probe(check, LOOPBACK, hc_servers.closed_port(), http_engine=engine)
    assert result.ok, result.reason


async def test_new_connection_per_check_unless_keepalive(
    http_app: hc_servers.HttpApp, engine: healthchecks.HttpEngine
) -> None:
    from healthchecks import _checker  # the reusable checker object, as the scheduler holds it

    for keepalive, connections in ((False, 3), (True, 1)):
        http_app.peers.clear()
        check = http(path="/ok", keepalive=keepalive)
        checker = _checker.make_checker(check, LOOPBACK, http_app.port, http_engine=engine)
        try:
            for _ in range(3):
                assert (await checker.run())[0]
        finally:
            await checker.close()
        assert len(http_app.peers) == connections, keepalive


async def test_keepalive_survives_the_server_closing_idle_connections(
    raw_server: Any, engine: healthchecks.HttpEngine
) -> None:
    from healthchecks import _checker

    server = await raw_server(hc_servers.http_status(lambda: 200))  # answers "Connection: close"
    checker = _checker.make_checker(http(path="/", keepalive=True), LOOPBACK, server.port, http_engine=engine)
    try:
        results = [await checker.run() for _ in range(3)]
    finally:
        await checker.close()
    assert results == [(True, "status 200")] * 3
    assert server.connections == 3


async def test_keepalive_asks_again_on_a_new_connection_when_the_kept_one_was_closed_meanwhile(
    raw_server: Any, engine: healthchecks.HttpEngine
) -> None:
    from healthchecks import _checker

    server = await raw_server(hc_servers.http_kept(requests=1))  # keeps each connection for one answer, silently
    checker = _checker.make_checker(http(path="/", keepalive=True), LOOPBACK, server.port, http_engine=engine)
    try:
        results = []
        for _ in range(3):
            results.append(await checker.run())
            await asyncio.sleep(0.1)  # the server closes the idle connection meanwhile
    finally:
        await checker.close()
    assert results == [(True, "status 200")] * 3
    assert server.connections == 3


async def test_keepalive_reuses_one_connection_while_the_server_keeps_it(raw_server: Any) -> None:
    from healthchecks import _checker

    server = await raw_server(hc_servers.http_kept(requests=3))
    checker = _checker.make_checker(http(path="/", keepalive=True), LOOPBACK, server.port)
    try:
        assert [await checker.run() for _ in range(3)] == [(True, "status 200")] * 3
        assert (server.connections, server.open) == (1, 1)
    finally:
        checker.release()
    await asyncio.sleep(0.05)
    assert server.open == 0, "release() closed the kept connection"


# --- TLS ---------------------------------------------------------------------------------------------------------


async def test_https_verified_against_ca_file_with_sni(
    https_app: hc_servers.HttpApp, certs: dict[str, pathlib.Path], engine: healthchecks.HttpEngine
) -> None:
    check = http(type="https", path="/ok", ca_file=str(certs["ca"]), sni="localhost")
    result = await probe(check, https_app.port, engine)
    assert (result.ok, result.reason) == (True, "status 200")
    by_ip = await probe(http(type="https", path="/ok", ca_file=str(certs["ca"])), https_app.port, engine)
    assert by_ip.ok, by_ip.reason  # the certificate names 127.0.0.1 too


async def test_https_expired_certificate_is_a_clear_failure(
    expired_app: hc_servers.HttpApp, certs: dict[str, pathlib.Path], engine: healthchecks.HttpEngine
) -> None:
    check = http(type="https", path="/ok", ca_file=str(certs["ca"]), sni="localhost")
    result = await probe(check, expired_app.port, engine)
    assert not result.ok
    assert result.reason == "TLS error: certificate has expired"
    unverified = await probe(http(type="https", path="/ok", tls_verify=False), expired_app.port, engine)
    assert (unverified.ok, unverified.reason) == (True, "status 200")


async def test_https_wrong_name_and_unknown_ca_fail(
    https_app: hc_servers.HttpApp, certs: dict[str, pathlib.Path], engine: healthchecks.HttpEngine
) -> None:
    wrong_name = await probe(
        http(type="https", path="/ok", ca_file=str(certs["ca"]), sni="other.example"), https_app.port, engine
    )
    assert not wrong_name.ok
    assert wrong_name.reason.startswith("TLS error: Hostname mismatch"), wrong_name.reason
    system_store = await probe(http(type="https", path="/ok", sni="localhost"), https_app.port, engine)
    assert not system_store.ok
    assert system_store.reason == "TLS error: unable to get local issuer certificate"


async def test_https_against_plain_http_fails_with_tls_error(
    http_app: hc_servers.HttpApp, engine: healthchecks.HttpEngine
) -> None:
    result = await probe(http(type="https", path="/ok", tls_verify=False), http_app.port, engine)
    assert not result.ok
    assert result.reason.startswith("TLS error: "), result.reason


# --- faults ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        (hc_servers.silent, r"timeout after 0\.5s waiting for the response"),
        (hc_servers.trickle, r"timeout after 0\.5s waiting for the response"),
        (hc_servers.garbage, r"bad response: .*"),
        (hc_servers.endless_headers, r"bad response: .*"),
        (hc_servers.reset, r"connection reset"),
        (hc_servers.close_at_once, r"connection closed before a complete response"),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
async def test_misbehaving_server_gives_a_down_reason_within_the_timeout(
    raw_server: Any, engine: healthchecks.HttpEngine, behaviour: Any, reason: str
) -> None:
    server = await raw_server(behaviour)
    result = await probe(http(path="/"), server.port, engine)
    assert not result.ok
    assert re.fullmatch(reason, result.reason), result.reason
    assert result.duration < 0.5 + 1.0  # the timeout plus generous slack for a loaded machine


async def test_refused_connection(engine: healthchecks.HttpEngine) -> None:
    result = await probe(http(path="/"), hc_servers.closed_port(), engine)
    assert (result.ok, result.reason) == (False, "connection refused")


async def test_header_with_line_break_is_rejected_up_front(engine: healthchecks.HttpEngine) -> None:
    with pytest.raises(healthchecks.HealthCheckConfigError):
        # config refuses it too; built unvalidated, it proves the checker defends itself as well
        unvalidated = http().model_copy(update={"headers": {"X-Evil": "a\r\nInjected: yes"}})
        await probe(unvalidated, 80, engine)


async def test_ipv6_loopback_with_bracketed_host_header(engine: healthchecks.HttpEngine) -> None:
    import ipaddress

    from aiohttp import web

    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers["Host"])
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "::1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        result = await healthchecks.probe(http(), ipaddress.IPv6Address("::1"), port, http_engine=engine)
    finally:
        await runner.cleanup()
    assert (result.ok, result.reason) == (True, "status 200")
    assert seen == [f"[::1]:{port}"]
