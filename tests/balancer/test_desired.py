"""Reconciliation decisions, without I/O: who is in the data plane, with what weight, and which VIPs are announced."""

import ipaddress

import bpf
import config
from balancer import desired, reload_diff

CONFIG = """
interfaces: [eth0]
bgp: {local_as: 65001, router_id: 192.0.2.1, attributes: {med: 10}}
services:
  - name: web
    vips: [192.0.2.100, "2001:db8:100::100"]
    port: 80
    need: 2
    backends:
      - 198.18.0.11
      - {address: 198.18.0.12, weight: 3}
      - {address: 198.18.0.13, state: drained}
      - {address: 198.18.0.14, state: disabled}
  - name: dns
    vip: 192.0.2.100
    port: 53
    protocol: udp
    checks: []
    bgp: {med: 10}
    backends: [198.18.0.21, {address: 198.18.0.22, vlan: 7}]
"""


def cfg(text: str = CONFIG) -> config.XdplbConfig:
    return config.parse_config(text, source="test.yaml")


def up(*keys: str) -> dict[str, desired.Health]:
    return {key: desired.Health("up", "ok", 0.0) for key in keys}


WEB4 = bpf.ServiceKey(ipaddress.ip_address("192.0.2.100"), 80, "tcp")
WEB6 = bpf.ServiceKey(ipaddress.ip_address("2001:db8:100::100"), 80, "tcp")
DNS = bpf.ServiceKey(ipaddress.ip_address("192.0.2.100"), 53, "udp")


def dataplane(
    config_: config.XdplbConfig, health: dict[str, desired.Health], overrides: dict[str, config.AdminState]
) -> dict[bpf.ServiceKey, bpf.Service]:
    """The desired data plane by service key, every backend's MAC known."""
    macs = {backend.address: "02:00:00:00:00:01" for _, backend in config_.backends()}
    return {service.key: service for _, service in desired.dataplane_services(config_, health, overrides, macs)}


def members(services: dict[bpf.ServiceKey, bpf.Service], key: bpf.ServiceKey) -> list[tuple[str, int, int]]:
    return [(str(b.address), b.weight, b.vlan) for b in services[key].backends]


def test_a_backends_interface_comes_from_its_next_hop() -> None:
    config_ = cfg()
    addresses = [backend.address for _, backend in config_.backends()]
    hops: dict[config.IpAddress, bpf.NextHop | str | None] = {a: bpf.NextHop("02:00:00:00:00:01", 7) for a in addresses}
    hops[addresses[0]] = "02:00:00:00:00:02"  # a bare MAC: the ingress interface
    hops[addresses[1]] = None
    health = up(*(service.backend_key(backend) for service, backend in config_.backends()))
    by_address = {
        b.address: b for _, service in desired.dataplane_services(config_, health, {}, hops) for b in service.backends
    }
    assert (by_address[addresses[0]].mac, by_address[addresses[0]].ifindex) == ("02:00:00:00:00:02", 0)
    assert (by_address[addresses[1]].mac, by_address[addresses[1]].ifindex) == (None, 0)
    assert {(b.mac, b.ifindex) for a, b in by_address.items() if a not in addresses[:2]} == {("02:00:00:00:00:01", 7)}


def test_only_healthy_enabled_backends_are_in_the_data_plane_and_drained_ones_weigh_nothing() -> None:
    health = up("web/198.18.0.11", "web/198.18.0.13", "web/198.18.0.14") | {
        "web/198.18.0.12": desired.Health("down", "connection refused", 0.0)
    }
    services = dataplane(cfg(), health, {})
    assert members(services, WEB4) == [("198.18.0.11", 1, 0), ("198.18.0.13", 0, 0)]
    assert members(services, WEB6) == members(services, WEB4), "every VIP of a service gets the same backends"
    assert members(services, DNS) == [("198.18.0.21", 1, 0), ("198.18.0.22", 1, 7)], "no checks: healthy while enabled"


def test_unknown_health_keeps_a_backend_out() -> None:
    services = dataplane(cfg(), {"web/198.18.0.11": desired.Health("unknown", "", 0.0)}, {})
    assert [str(b.address) for b in services[WEB4].backends] == ["198.18.0.12", "198.18.0.13"]


def test_admin_overrides_beat_the_file() -> None:
    overrides = {
        "web/198.18.0.11": config.AdminState.DRAINED,
        "web/198.18.0.13": config.AdminState.ENABLED,
        "dns/198.18.0.21": config.AdminState.DISABLED,
    }
    health = up("web/198.18.0.11", "web/198.18.0.12", "web/198.18.0.13", "web/198.18.0.14")
    services = dataplane(cfg(), health, overrides)
    assert members(services, WEB4) == [("198.18.0.11", 0, 0), ("198.18.0.12", 3, 0), ("198.18.0.13", 1, 0)]
    assert members(services, DNS) == [("198.18.0.22", 1, 7)]


def status(key: bpf.ServiceKey, *reasons: str) -> bpf.ServiceStatus:
    return bpf.ServiceStatus(
        key,
        0,
        7,
        tuple(
            bpf.BackendStatus(
                ipaddress.ip_address(f"198.18.0.{i}"), 1, "02:00:00:00:00:01", i, 1, bpf.BackendState(reason)
            )
            for i, reason in enumerate(reasons, start=1)
        ),
    )


def test_a_vip_is_announced_only_when_ready_and_every_service_on_it_has_need_healthy() -> None:
    programmed = {
        WEB4: status(WEB4, "active", "active"),
        WEB6: status(WEB6, "active", "draining (weight 0)"),
        DNS: status(DNS, "active"),
    }
    routes = desired.routes(cfg(), programmed, ready=True, why_not_ready="")
    v4, v6 = routes[ipaddress.ip_network("192.0.2.100/32")], routes[ipaddress.ip_network("2001:db8:100::100/128")]
    assert (v4.announce, v4.reason, v4.services) == (True, "all services up", ("web", "dns"))
    assert v4.attributes.med == 10
    assert (v6.announce, v6.reason) == (False, "web: 1 of 2 needed backends healthy")

    programmed[DNS] = status(DNS, "no MAC (neighbour unresolved)")
    v4 = desired.routes(cfg(), programmed, ready=True, why_not_ready="")[ipaddress.ip_network("192.0.2.100/32")]
    assert (v4.announce, v4.reason) == (False, "dns: 0 of 1 needed backends healthy"), "all services on a VIP count"

    programmed[DNS] = status(DNS, "active")
    not_ready = desired.routes(cfg(), programmed, ready=False, why_not_ready="starting")
    assert not any(route.announce for route in not_ready.values()), "nothing is announced before health is known"
    assert not_ready[ipaddress.ip_network("192.0.2.100/32")].reason == "starting"


def test_need_zero_announces_regardless() -> None:
    text = CONFIG.replace("need: 2", "need: 0")
    routes = desired.routes(cfg(text), {}, ready=True, why_not_ready="")
    assert routes[ipaddress.ip_network("2001:db8:100::100/128")].announce


def test_reload_diff_names_what_changed() -> None:
    new = CONFIG.replace("{address: 198.18.0.12, weight: 3}", "{address: 198.18.0.12, weight: 4}").replace(
        "      - {address: 198.18.0.14, state: disabled}\n", "      - 198.18.0.15\n"
    )
    new += "  - {name: extra, vip: 192.0.2.101, port: 443, backends: [198.18.0.31]}\n"
    changes = reload_diff.describe_changes(cfg(), cfg(new))
    assert changes == ["service extra added", "service web changed (+198.18.0.15 -198.18.0.14 ~198.18.0.12)"]
    assert reload_diff.describe_changes(cfg(), cfg()) == []


def test_services_wait_for_their_backends_first_verdicts() -> None:
    health = {
        "web/198.18.0.11": desired.Health("unknown", "", 0.0),
        "web/198.18.0.12": desired.Health("up", "", 0.0),
        "web/198.18.0.13": desired.Health("up", "", 0.0),
        "web/198.18.0.14": desired.Health("unknown", "", 0.0),
    }
    assert desired.unsettled_services(cfg(), health, {}) == {"web"}
    assert desired.unsettled_services(cfg(), health, {"web/198.18.0.11": config.AdminState.DISABLED}) == set(), (
        "a disabled backend runs no checks: nobody waits for it (198.18.0.14 is disabled in the file)"
    )
    programmed = {
        WEB4: status(WEB4, "active", "active"),
        WEB6: status(WEB6, "active", "active"),
        DNS: status(DNS, "active"),
    }
    routes = desired.routes(cfg(), programmed, ready=True, why_not_ready="", settling={"web"})
    v4 = routes[ipaddress.ip_network("192.0.2.100/32")]
    assert (v4.announce, v4.reason) == (False, "web: waiting for the first health verdicts")


def test_a_tunnelled_backend_needs_no_mac_and_keeps_its_forwarding() -> None:
    config_ = cfg("""
interfaces: [eth0]
dataplane: {tunnel_source_v4: 198.18.0.1}
services:
  - name: web
    vip: 192.0.2.100
    port: 80
    forwarding: ipip
    checks: []
    backends: [198.18.5.20, {address: 198.18.5.21, forwarding: gue}, {address: 198.18.0.11, forwarding: l2}]
""")
    ((_, service),) = desired.dataplane_services(config_, {}, {}, {})  # no MAC known for anyone
    assert [(str(b.address), b.tunnel, b.mac) for b in service.backends] == [
        ("198.18.5.20", "ipip", None),
        ("198.18.5.21", "gue", None),
        ("198.18.0.11", None, None),
    ]
