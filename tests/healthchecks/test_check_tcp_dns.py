"""TCP and DNS checks against real loopback servers."""

import re
from typing import Any

import pytest

import config
import healthchecks
from tests.healthchecks import hc_servers

LOOPBACK = hc_servers.LOOPBACK
TIMING = {"timeout": 0.4, "interval": 1}


def tcp(**fields: Any) -> config.TcpCheck:
    return config.TcpCheck.model_validate({"timing": TIMING, **fields})


def dns_check(**fields: Any) -> config.DnsCheck:
    return config.DnsCheck.model_validate({"timing": TIMING, **fields})


async def test_tcp_connect_passes_and_refused_fails(raw_server: Any) -> None:
    server = await raw_server(hc_servers.silent)
    result = await healthchecks.probe(tcp(), LOOPBACK, server.port)
    assert (result.ok, result.reason) == (True, "connected")
    refused = await healthchecks.probe(tcp(), LOOPBACK, hc_servers.closed_port())
    assert (refused.ok, refused.reason) == (False, "connection refused")


async def test_tcp_sidecar_port(raw_server: Any) -> None:
    server = await raw_server(hc_servers.silent)
    result = await healthchecks.probe(tcp(port=server.port), LOOPBACK, hc_servers.closed_port())
    assert result.ok, result.reason


@pytest.mark.parametrize(
    ("behaviour", "fields", "ok", "reason"),
    [
        (hc_servers.banner, {"expect": "+OK"}, True, "reply matches"),
        (hc_servers.banner, {"expect": "-ERR"}, False, r"reply b'\+OK ' does not start with b'-ERR'"),
        (hc_servers.echo, {"send": r"PING\r\n", "expect": r"PING\r\n"}, True, "reply matches"),
        (hc_servers.silent, {"send": "PING", "expect": "PONG"}, False, r"timeout after 0\.4s waiting for the reply"),
        (hc_servers.close_at_once, {"send": "PING", "expect": "PONG"}, False, "connection closed without a reply"),
        (hc_servers.reset, {"send": "PING", "expect": "PONG"}, False, "connection reset"),
    ],
    ids=["banner", "banner-mismatch", "echo", "silent", "closed", "reset"],
)
async def test_tcp_send_and_expect(
    raw_server: Any, behaviour: Any, fields: dict[str, str], ok: bool, reason: str
) -> None:
    server = await raw_server(behaviour)
    result = await healthchecks.probe(tcp(**fields), LOOPBACK, server.port)
    assert result.ok == ok
    assert re.fullmatch(reason, result.reason), result.reason
    assert result.duration < 0.4 + 1.0


@pytest.fixture(params=["udp", "tcp"])
def transport(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("mode", "fields", "ok", "reason"),
    [
        ("ok", {}, True, "rcode NOERROR, 1 answers"),
        ("ok", {"name": "example.org", "qtype": "A"}, True, "rcode NOERROR, 1 answers"),
        ("nxdomain", {"name": "missing.example", "rcode": "NXDOMAIN"}, True, "rcode NXDOMAIN, 0 answers"),
        ("servfail", {}, False, "rcode SERVFAIL, expected NOERROR"),
        ("garbage", {}, False, r"bad DNS reply: reply of \d+ bytes is shorter than a DNS header"),
        ("wrong_question", {}, False, r"bad DNS reply: reply is for another question \(other\. IN SOA\)"),
        ("bad_record", {}, False, r"bad DNS reply: malformed reply \(FormError: .*\)"),
        ("silent", {}, False, r"timeout after 0\.4s waiting for the reply"),
    ],
)
async def test_dns_answers(
    dns: hc_servers.DnsResponder, transport: str, mode: str, fields: dict[str, str], ok: bool, reason: str
) -> None:
    dns.mode = mode
    result = await healthchecks.probe(dns_check(transport=transport, **fields), LOOPBACK, dns.port)
    assert result.ok == ok
    assert re.fullmatch(reason, result.reason), result.reason
    assert dns.queries == 1
    assert result.duration < 0.4 + 1.0


async def test_dns_reply_with_wrong_id_is_ignored_over_udp(dns: hc_servers.DnsResponder) -> None:
    dns.mode = "wrong_id"
    result = await healthchecks.probe(dns_check(), LOOPBACK, dns.port)
    assert not result.ok
    assert result.reason == "timeout after 0.4s waiting for the reply (1 replies with a wrong id ignored)"
    tcp_result = await healthchecks.probe(dns_check(transport="tcp"), LOOPBACK, dns.port)
    assert not tcp_result.ok
    assert tcp_result.reason.startswith("bad DNS reply: reply id"), tcp_result.reason


async def test_dns_to_a_closed_port(transport: str) -> None:
    result = await healthchecks.probe(dns_check(transport=transport), LOOPBACK, hc_servers.closed_port())
    assert (result.ok, result.reason) == (False, "connection refused")


@pytest.mark.parametrize(
    "check",
    [
        # config refuses these too; built unvalidated, they prove the checker defends itself as well
        config.HttpCheck.model_construct(path="/a b"),
        config.HttpCheck.model_construct(path="/\r\nX-Injected: 1"),
        config.HttpCheck.model_construct(host="evil\r\nX: 1"),
        config.HttpCheck.model_construct(headers={"Bad Name": "x"}),
        config.TcpCheck(send="\\x"),
        config.DnsCheck(name="a..b"),
    ],
    ids=["path-space", "path-crlf", "host-crlf", "header-name", "tcp-escape", "dns-name"],
)
async def test_checks_that_cannot_be_sent_are_rejected(check: config.Check) -> None:
    with pytest.raises(healthchecks.HealthCheckConfigError):
        await healthchecks.probe(check, LOOPBACK, 80)
