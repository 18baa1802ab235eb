"""``xdplb balance`` without root: the config it builds, its refusals in command-line terms, its status line.
``test_balance_netns.py`` runs it for real."""

import io
import re

import pytest

from balancer import balance, cli, status

BACKENDS = ("198.18.0.11", "198.18.0.12")


@pytest.mark.parametrize(("check", "types"), [("tcp", ["tcp"]), ("http", ["http"]), ("none", [])])
def test_the_config_is_one_service_on_one_interface_without_bgp(check: str, types: list[str]) -> None:
    cfg = balance.build_config(
        balance.BalanceOptions(
            "eth0",
            "192.0.2.10",
            BACKENDS,
            port=8080,
            check=check,  # type: ignore[arg-type]
            http_path="/healthz",
            mode="generic",
        )
    )
    assert [(i.name, i.mode) for i in cfg.interfaces] == [("eth0", "generic")] and cfg.bgp is None
    [service] = cfg.services
    assert (str(service.vips[0]), service.port, service.protocol) == ("192.0.2.10", 8080, "tcp")
    assert [str(b.address) for b in service.backends] == list(BACKENDS)
    checks = cfg.resolved_checks(service, service.backends[0])
    assert [c.type for c in checks] == types
    if check == "http":
        assert checks[0].path == "/healthz"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["eth0", "192.0.2.300", "198.18.0.11"], "xdplb balance: VIP: not an IP address: '192.0.2.300'"),
        (["eth0", "192.0.2.10", "198.18.0.11", "nope"], "xdplb balance: RIP 2: not an IP address: 'nope'"),
        (["eth0", "192.0.2.10", "198.18.0.11", "--port", "0"], "xdplb balance: --port: "),
        (["eth0", "192.0.2.10", "198.18.0.11", "--api", "localhost"], "xdplb balance: --api: bad listen address"),
        (["no-such-if0", "192.0.2.10", "198.18.0.11"], "xdplb balance: IFACE: no interface no-such-if0 here"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_loaded(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["balance", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(said) and captured.out == ""


def _snapshot(packets: int, flows: int, health: tuple[str, str], reattached: int = 0) -> status.Snapshot:
    def backend(address: str, state: str) -> status.BackendReport:
        return status.BackendReport(
            key=f"s/{address}",
            address=address,
            weight=1,
            admin="enabled",
            admin_override=None,
            health=state,
            reason="status 200" if state == "up" else "connection refused",
            since=0.0,
            last_check_seconds=None,
            mac=None,
            forwarding="l2",
            dataplane="active" if state == "up" else "removed: down",
            table_entries=0,
            packets=0,
            bytes=0,
            new_flows=0,
        )

    service = status.ServiceReport(
        name="s",
        vip="192.0.2.10",
        port=80,
        protocol="tcp",
        sticky=False,
        need=1,
        healthy=1,
        up=True,
        table_size=0,
        packets=packets,
        bytes=0,
        new_flows=flows,
        drop_no_backend=0,
        backends=tuple(backend(a, h) for a, h in zip(BACKENDS, health, strict=True)),
    )
    return status.Snapshot(
        version="0",
        config_digest="",
        config_source="",
        started_at=0.0,
        ready=True,
        interfaces={"eth0": "generic"},
        services=(service,),
        vips=(),
        peers=(),
        totals={},
        flow_table_entries={},
        flow_table_size=0,
        reloads={},
        last_reload_error=None,
        xdp_reattaches={"eth0": {"xdp_missing": reattached}} if reattached else {},
    )


def test_the_status_line_says_what_serves_and_how_much() -> None:
    line = balance.BalanceStatusLine()
    first = line.render(_snapshot(0, 0, ("up", "up")), now=10.0)
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d  192\.0\.2\.10:80/tcp \| backends up 2/2 \(198\.18\.0\.11 198\.18\.0\.12\) "
        r"\| XDP eth0 generic",
        first,
    ), first
    second = line.render(_snapshot(4000, 60, ("up", "down"), reattached=1), now=12.0)
    assert second.endswith(
        "  192.0.2.10:80/tcp | backends up 1/2 (198.18.0.11) | down: 198.18.0.12: connection "
        "refused | 2000 pps, 30 new flows/s | XDP eth0 generic (re-attached 1x)"
    ), second


def test_ipv6_without_checks_and_errors_on_their_own_stream() -> None:
    cfg = balance.build_config(balance.BalanceOptions("eth0", "2001:db8::10", ("2001:db8::11",), check="none"))
    assert cfg.resolved_checks(cfg.services[0], cfg.services[0].backends[0]) == ()
    out, err = io.StringIO(), io.StringIO()
    assert balance.run_balance(balance.BalanceOptions("x" * 16, "192.0.2.10", BACKENDS), out, err) == 2
    assert "IFACE" in err.getvalue() and out.getvalue() == ""
