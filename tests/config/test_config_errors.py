"""Every way a configuration can be wrong names the path of the mistake and says what is wrong.

Each case is a record: a document with exactly one mistake, the path it must be reported at, and a piece of the
message. The document is otherwise valid, so the case also proves the rule reports nothing spurious.
"""

from collections.abc import Callable
from dataclasses import dataclass

import pytest

import config

Load = Callable[..., config.XdplbConfig]  # the `load` fixture of conftest.py
Problems = Callable[..., list[tuple[str, str]]]  # the `problems` fixture

SERVICE = "{vip: 192.0.2.100, port: 80, backends: [198.18.0.11, 198.18.0.12]}"
BGP = "bgp: {local_as: 65001, router_id: 192.0.2.1, peers: [{address: 198.18.0.1, peer_as: 65000}]}"


@dataclass(frozen=True)
class Case:
    description: str
    document: str
    path: str
    message: str


CASES = [
    Case(
        "unknown top-level key",
        f"interfaces: [eth0]\nservces: [{SERVICE}]",
        "servces",
        "unknown key; did you mean 'services'?",
    ),
    Case(
        "unknown backend key",
        "interfaces: [eth0]\nservices:\n- {vip: 192.0.2.100, port: 80, backends: [{address: 198.18.0.11, wieght: 2}]}",
        "services[0].backends[0].wieght",
        "did you mean 'weight'?",
    ),
    Case("missing interfaces", f"services: [{SERVICE}]", "interfaces", "required, but missing"),
    Case("empty interfaces", f"interfaces: []\nservices: [{SERVICE}]", "interfaces", "at least 1 item"),
    Case("bad interface name", "interfaces: [eth0/1]", "interfaces[0].name", "bad interface name 'eth0/1'"),
    Case("interface name too long", "interfaces: [abcdefghijklmnop]", "interfaces[0].name", "1 to 15 characters"),
    Case(
        "duplicate interface",
        "interfaces: [eth0, {name: eth0, mode: native}]",
        "interfaces[1].name",
        "eth0 is already interfaces[0]",
    ),
    Case(
        "bad attach mode",
        "interfaces: [{name: eth0, mode: offload}]",
        "interfaces[0].mode",
        "'auto', 'native' or 'generic', got 'offload'",
    ),
    Case(
        "flow table too small",
        "interfaces: [eth0]\ndataplane: {flow_table_size: 10}",
        "dataplane.flow_table_size",
        "greater than or equal to 1024, got 10",
    ),
    Case(
        "more services than the data plane holds",
        "interfaces: [eth0]\ndataplane: {max_services: 1}\nservices:\n"
        "- {vips: [192.0.2.100, 192.0.2.101], port: 80, backends: [198.18.0.11]}",
        "dataplane.max_services",
        "the services need 2 data-plane services (one per VIP, port and protocol) but max_services is 1",
    ),
    Case(
        "more backend slots than the data plane holds",
        f"interfaces: [eth0]\ndataplane: {{max_backends: 2}}\nservices: [{SERVICE}]",
        "dataplane.max_backends",
        "the services need 2 backend slots (one per VIP, port, protocol and backend) but max_backends is 2",
    ),
    Case(
        "missing port",
        "interfaces: [eth0]\nservices: [{vip: 192.0.2.100}]",
        "services[0].port",
        "required, but missing",
    ),
    Case(
        "port out of range",
        "interfaces: [eth0]\nservices: [{vip: 192.0.2.100, port: 65536}]",
        "services[0].port",
        "less than or equal to 65535, got 65536",
    ),
    Case(
        "unknown protocol",
        "interfaces: [eth0]\nservices: [{vip: 192.0.2.100, port: 80, protocol: sctp}]",
        "services[0].protocol",
        "'tcp' or 'udp', got 'sctp'",
    ),
    Case(
        "vip and vips",
        "interfaces: [eth0]\nservices: [{vip: 192.0.2.100, vips: [192.0.2.101], port: 80}]",
        "services[0]",
        "give either vip or vips, not both",
    ),
    Case("no vips", "interfaces: [eth0]\nservices: [{vips: [], port: 80}]", "services[0].vips", "at least 1 item"),
    Case(
        "VIP not an address",
        "interfaces: [eth0]\nservices: [{vip: 192.0.2.x, port: 80}]",
        "services[0].vip",
        "not an IP address: '192.0.2.x'",
    ),
    Case(
        "VIP is a network",
        "interfaces: [eth0]\nservices: [{vip: 192.0.2.0/24, port: 80}]",
        "services[0].vip",
        "'192.0.2.0/24' is a network; give a single address",
    ),
    Case(
        "VIP unspecified",
        "interfaces: [eth0]\nservices: [{vips: [192.0.2.100, '::'], port: 80}]",
        "services[0].vips[1]",
        ":: is not a host address",
    ),
    Case(
        "VIP multicast",
        "interfaces: [eth0]\nservices: [{vip: 239.1.1.1, port: 80}]",
        "services[0].vip",
        "239.1.1.1 is not a host address",
    ),
    Case(
        "VIP broadcast",
        "interfaces: [eth0]\nservices: [{vip: 255.255.255.255, port: 80}]",
        "services[0].vip",
        "not a host address",
    ),
    Case(
        "VIP as a number",
        "interfaces: [eth0]\nservices: [{vips: [3221225985], port: 80}]",
        "services[0].vips[0]",
        "expected an IP address as a string, got 3221225985",
    ),
    Case(
        "duplicate VIP in a service",
        "interfaces: [eth0]\nservices: [{vips: [192.0.2.100, 192.0.2.100/32], port: 80, need: 0}]",
        "services[0].vips[1]",
        "192.0.2.100 is already vips[0]",
    ),
    Case(
        "table size not prime",
        "interfaces: [eth0]\nservices: [{vip: 192.0.2.100, port: 80, table_size: 16384}]",
        "services[0].table_size",
        "table size 16384 is not prime (Maglev needs a prime); nearest: 16381 or 16411",
    ),
    Case(
        "table size too large",
        "interfaces: [eth0]\nservices: [{vip: 192.0.2.100, port: 80, table_size: 2000003}]",
        "services[0].table_size",
        "less than or equal to 1048573",
    ),
    Case(
        "table smaller than backends",
        "interfaces: [eth0]\nservices: [{vip: 192.0.2.100, port: 80, table_size: 7,"
        " backends: [198.18.0.1, 198.18.0.2, 198.18.0.3, 198.18.0.4, 198.18.0.5, 198.18.0.6, 198.18.0.7, "
        "198.18.0.8]}]",
        "services[0].table_size",
        "table size 7 is smaller than 8 backends",
    ),
    Case(
        "need above backends",
        "interfaces: [eth0]\nservices: [{vip: 192.0.2.100, port: 80, need: 3, backends: [198.18.0.11, 198.18.0.12]}]",
        "services[0].need",
        "need is 3 but the service has 2 backends",
    ),
    Case(
        "need with no backends",
        "interfaces: [eth0]\nservices: [{vip: 192.0.2.100, port: 80}]",
        "services[0].need",
        "need is 1 but the service has 0 backends",
    ),
    Case(
        "negative need",
        "interfaces: [eth0]\nservices: [{vip: 192.0.2.100, port: 80, need: -1}]",
        "services[0].need",
        "greater than or equal to 0",
    ),
    Case(
        "bad backend address",
        "interfaces: [eth0]\nservices:\n- {vip: 192.0.2.100, port: 80, backends: [198.18.0.11, {address: 198.18.0.x}]}",
        "services[0].backends[1].address",
        "not an IP address: '198.18.0.x'",
    ),
    Case(
        "backend address missing",
        "interfaces: [eth0]\nservices:\n- {vip: 192.0.2.100, port: 80, backends: [{weight: 2}]}",
        "services[0].backends[0].address",
        "required, but missing",
    ),
    Case(
        "duplicate backend",
        "interfaces: [eth0]\nservices:\n- {vip: 192.0.2.100, port: 80, backends: "
        "[198.18.0.11, {address: 198.18.0.11, weight: 3}]}",
        "services[0].backends[1].address",
        "198.18.0.11 is already backends[0]",
    ),
    Case(
        "backend is a VIP",
        "interfaces: [eth0]\nservices:\n- {vip: 192.0.2.100, port: 80, backends: [198.18.0.11]}"
        "\n- {vip: 192.0.2.101, port: 80, backends: [198.18.0.11, 192.0.2.100]}",
        "services[1].backends[1].address",
        "192.0.2.100 is a VIP of this balancer",
    ),
    Case(
        "backend pinned to an interface XDP does not attach to",
        "interfaces: [eth0, eth1]\nservices:\n- {vip: 192.0.2.100, port: 80, backends: "
        "[{address: 198.18.0.11, interface: eth2}]}",
        "services[0].backends[0].interface",
        "eth2 is not one of the interfaces XDP attaches to (eth0, eth1)",
    ),
    Case(
        "tunnelled backend with a VLAN",
        "interfaces: [eth0]\ndataplane: {tunnel_source_v4: 198.18.0.1}\nservices:\n- {vip: 192.0.2.100, port: 80, "
        "forwarding: ipip, backends: [198.18.5.20, {address: 198.18.5.21, vlan: 7}]}",
        "services[0].backends[1].vlan",
        "198.18.5.21 is reached by ipip: the route decides its interface, so it takes no vlan",
    ),
    Case(
        "backend tunnelled by its own forwarding, pinned to an interface",
        "interfaces: [eth0]\ndataplane: {tunnel_source_v4: 198.18.0.1}\nservices:\n- {vip: 192.0.2.100, port: 80, "
        "backends: [{address: 198.18.5.21, forwarding: gue, interface: eth0}]}",
        "services[0].backends[0].interface",
        "198.18.5.21 is reached by gue: the route decides its interface, so it takes no interface",
    ),
    Case(
        "tunnel without a source of the backend's family",
        "interfaces: [eth0]\ndataplane: {tunnel_source_v4: 198.18.0.1}\nservices:\n- {vip: 192.0.2.100, port: 80, "
        'forwarding: gue, backends: [198.18.5.20, "2001:db8:5::20"]}',
        "services[0].backends[1].address",
        "2001:db8:5::20 is reached by gue, which needs dataplane.tunnel_source_v6",
    ),
    Case(
        "tunnel source of the wrong family",
        "interfaces: [eth0]\ndataplane: {tunnel_source_v6: 198.18.0.1}",
        "dataplane.tunnel_source_v6",
        "198.18.0.1 is not an IPv6 address",
    ),
    Case(
        "unknown forwarding",
        "interfaces: [eth0]\nservices:\n- {vip: 192.0.2.100, port: 80, forwarding: gre}",
        "services[0].forwarding",
        "'l2', 'ipip' or 'gue'",
    ),
    Case(
        "one address pinned to two interfaces",
        "interfaces: [eth0, eth1]\nservices:\n- {vip: 192.0.2.100, port: 80, backends: "
        "[{address: 198.18.0.11, interface: eth0}]}\n- {vip: 192.0.2.100, port: 81, backends: "
        "[{address: 198.18.0.11, interface: eth1}]}",
        "services[1].backends[0].interface",
        "198.18.0.11 is pinned to eth0 by services[0].backends[0]: one address is on one interface",
    ),
    Case(
        "weight too large",
        "interfaces: [eth0]\nservices:\n- {vip: 192.0.2.100, port: 80, backends: "
        "[{address: 198.18.0.11, weight: 65536}]}",
        "services[0].backends[0].weight",
        "less than or equal to 65535",
    ),
    Case(
        "negative weight",
        "interfaces: [eth0]\nservices:\n- {vip: 192.0.2.100, port: 80, backends: [{address: 198.18.0.11, weight: -1}]}",
        "services[0].backends[0].weight",
        "greater than or equal to 0",
    ),
    Case(
        "unknown state",
        "interfaces: [eth0]\nservices:\n- {vip: 192.0.2.100, port: 80, backends: "
        "[{address: 198.18.0.11, state: paused}]}",
        "services[0].backends[0].state",
        "'enabled', 'drained' or 'disabled', got 'paused'",
    ),
    Case(
        "off is a word, not a boolean (YAML 1.2)",
        "interfaces: [eth0]\nservices:\n- {vip: 192.0.2.100, port: 80, backends: [{address: 198.18.0.11, state: off}]}",
        "services[0].backends[0].state",
        "input should be 'enabled', 'drained' or 'disabled', got 'off'",
    ),
    Case(
        "state given a boolean",
        "interfaces: [eth0]\nservices:\n- {vip: 192.0.2.100, port: 80, backends: "
        "[{address: 198.18.0.11, state: false}]}",
        "services[0].backends[0].state",
        "got False (unquoted true and false are booleans: quote the word)",
    ),
    Case(
        "VLAN 0",
        "interfaces: [eth0]\nservices:\n- {vip: 192.0.2.100, port: 80, backends: [{address: 198.18.0.11, vlan: 0}]}",
        "services[0].backends[0].vlan",
        "greater than or equal to 1, got 0",
    ),
    Case(
        "VLAN 4095",
        "interfaces: [eth0]\nservices:\n- {vip: 192.0.2.100, port: 80, backends: [{address: 198.18.0.11, vlan: 4095}]}",
        "services[0].backends[0].vlan",
        "less than or equal to 4094",
    ),
    Case(
        "same VIP, port and protocol twice",
        f"interfaces: [eth0]\nservices:\n- {SERVICE}\n- {{name: other, vips: "
        "[192.0.2.101, 192.0.2.100], port: 80, backends: [198.18.0.13]}",
        "services[1].vips[1]",
        "192.0.2.100 port 80/tcp is already served by services[0] (192.0.2.100:80/tcp)",
    ),
    Case(
        "duplicate service name",
        "interfaces: [eth0]\nservices:\n- {name: web, vip: 192.0.2.100, port: 80, "
        "backends: [198.18.0.11]}\n- {name: web, vip: 192.0.2.100, port: 443, backends: [198.18.0.11]}",
        "services[1].name",
        "name 'web' is already used by services[0]",
    ),
    Case(
        "service name with a space",
        "interfaces: [eth0]\nservices: [{name: my web, vip: 192.0.2.100, port: 80, backends: [198.18.0.11]}]",
        "services[0].name",
        "bad name 'my web': up to 128 letters, digits and _ . : / @ [ ] - (no spaces)",
    ),
    Case(
        "unknown service policy",
        "interfaces: [eth0]\npolicies: {web: {checks: [{type: http}]}}\nservices:\n- "
        "{vip: 192.0.2.100, port: 80, policy: wbe, backends: [198.18.0.11]}",
        "services[0].policy",
        "unknown policy 'wbe' (defined: web)",
    ),
    Case(
        "unknown backend policy",
        "interfaces: [eth0]\nservices:\n- {vip: 192.0.2.100, port: 80, backends: "
        "[198.18.0.11, {address: 198.18.0.12, policy: web}]}",
        "services[0].backends[1].policy",
        "unknown policy 'web' (defined: none)",
    ),
    Case(
        "policy and checks on a service",
        "interfaces: [eth0]\npolicies: {web: {checks: []}}\nservices:\n- "
        "{vip: 192.0.2.100, port: 80, policy: web, checks: [], backends: [198.18.0.11]}",
        "services[0].checks",
        "give either policy or checks, not both",
    ),
    Case(
        "policy and checks on a backend",
        "interfaces: [eth0]\npolicies: {web: {checks: []}}\nservices:\n- "
        "{vip: 192.0.2.100, port: 80, backends: [{address: 198.18.0.11, policy: web, checks: []}]}",
        "services[0].backends[0].checks",
        "give either policy or checks, not both",
    ),
    Case(
        "policy without checks",
        "interfaces: [eth0]\npolicies: {web: {}}",
        "policies.web.checks",
        "required, but missing",
    ),
    Case(
        "unknown check type",
        "interfaces: [eth0]\nservices:\n- {vip: 192.0.2.100, port: 80, checks: "
        "[{type: icmp}], backends: [198.18.0.11]}",
        "services[0].checks[0]",
        "unknown type 'icmp': expected one of 'http', 'https', 'tcp', 'dns'",
    ),
    Case(
        "check without type",
        "interfaces: [eth0]\npolicies: {web: {checks: [{path: /}]}}",
        "policies.web.checks[0]",
        "missing key 'type'",
    ),
    Case(
        "bad check field (no union tag in the path)",
        "interfaces: [eth0]\npolicies: {web: {checks: [{type: http, path: healthz}]}}",
        "policies.web.checks[0].path",
        "should match pattern '^/', got a string",
    ),
    Case(
        "bad check timing",
        "interfaces: [eth0]\npolicies: {web: {checks: [{type: tcp, timing: {interval: 1, timeout: 2}}]}}",
        "policies.web.checks[0].timing",
        "timeout 2.0s is longer than interval 1.0s",
    ),
    Case(
        "udp service without checks",
        "interfaces: [eth0]\nservices:\n- {vip: 192.0.2.53, port: 53, protocol: udp, "
        "backends: [198.18.0.11, {address: 198.18.0.12, checks: []}, 198.18.0.13]}",
        "services[0].checks",
        "udp service without checks for backends 0, 2: there is no default udp check",
    ),
    Case(
        "service bgp without a bgp section",
        "interfaces: [eth0]\nservices:\n- {vip: 192.0.2.100, port: 80, bgp: {med: 10}, backends: [198.18.0.11]}",
        "services[0].bgp",
        "there is no top-level bgp section",
    ),
    Case(
        "bad community",
        f"interfaces: [eth0]\n{BGP}\nservices:\n- {{vip: 192.0.2.100, port: 80, "
        "bgp: {communities: ['65001:70000']}, backends: [198.18.0.11]}",
        "services[0].bgp.communities",
        "bad community '65001:70000'",
    ),
    Case(
        "bad peer address",
        "interfaces: [eth0]\nbgp: {local_as: 65001, router_id: 192.0.2.1, peers: "
        "[{address: 198.18.0.x, peer_as: 65000}]}",
        "bgp.peers[0].address",
        "not an IP address: '198.18.0.x'",
    ),
    Case(
        "router id IPv6",
        "interfaces: [eth0]\nbgp: {local_as: 65001, router_id: '2001:db8::1'}",
        "bgp.router_id",
        "not an IPv4 address: '2001:db8::1'",
    ),
    Case(
        "duplicate peer",
        "interfaces: [eth0]\nbgp: {local_as: 65001, router_id: 192.0.2.1, peers: "
        "[{address: 198.18.0.1, peer_as: 65000}, {address: 198.18.0.1, peer_as: 65002}]}",
        "bgp.peers[1].address",
        "198.18.0.1 is already peers[0]",
    ),
    Case(
        "peer local address of another family",
        "interfaces: [eth0]\nbgp: {local_as: 65001, router_id: 192.0.2.1, "
        "peers: [{address: 198.18.0.1, peer_as: 65000, local_address: '2001:db8::2'}]}",
        "bgp.peers[0].local_address",
        "IPv6 but the peer address 198.18.0.1 is IPv4",
    ),
    Case(
        "default next hop of another family",
        "interfaces: [eth0]\nbgp: {local_as: 65001, router_id: 192.0.2.1, "
        f"attributes: {{next_hop: '2001:db8::1'}}}}\nservices: [{SERVICE}, {{vip: 192.0.2.101, port: 80, backends: "
        "[198.18.0.11]}]",
        "bgp.attributes.next_hop",
        "next hop 2001:db8::1 is IPv6 but services[0].vips[0] 192.0.2.100 is not (and 1 more)",
    ),
    Case(
        "service next hop of another family",
        f"interfaces: [eth0]\n{BGP}\nservices:\n- {{vips: [192.0.2.100, "
        "'2001:db8::100'], port: 80, bgp: {next_hop: 198.18.0.2}, backends: [198.18.0.11]}",
        "services[0].bgp.next_hop",
        "next hop 198.18.0.2 is IPv4 but services[0].vips[1] 2001:db8::100 is not",
    ),
    Case(
        "shared VIP with other route attributes",
        f"interfaces: [eth0]\n{BGP}\nservices:\n- {SERVICE}\n- "
        "{vip: 192.0.2.100, port: 443, bgp: {med: 5}, backends: [198.18.0.11]}",
        "services[1].bgp",
        "VIP 192.0.2.100 is also in services[0] (192.0.2.100:80/tcp) with other bgp attributes",
    ),
    Case(
        "API on all addresses without a token",
        "interfaces: [eth0]\napi: {listen: '0.0.0.0:9180'}",
        "api.token_file",
        "required because listen 0.0.0.0:9180 is not a loopback address",
    ),
    Case(
        "API on IPv6 any without a token",
        "interfaces: [eth0]\napi: {listen: '[::]:9180'}",
        "api.token_file",
        "is not a loopback address",
    ),
    Case(
        "API listen on a name",
        "interfaces: [eth0]\napi: {listen: 'localhost:9180'}",
        "api.listen",
        "'localhost' is not an IP address (names are not accepted)",
    ),
    Case(
        "API listen IPv6 without brackets",
        "interfaces: [eth0]\napi: {listen: '::1:9180'}",
        "api.listen",
        "write an IPv6 address in brackets",
    ),
    Case("API listen port 0", "interfaces: [eth0]\napi: {listen: '127.0.0.1:0'}", "api.listen", "port 0 is not in"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.description for case in CASES])
def test_one_mistake_is_reported_at_its_path(case: Case, problems: Problems) -> None:
    found = problems(case.document)
    assert len(found) == 1, found
    path, message = found[0]
    assert path == case.path
    assert case.message in message


def test_every_mistake_is_reported_at_once(problems: Problems) -> None:
    found = problems("""\
        interfaces: [eth0]
        services:
          - vip: 192.0.2.100
            port: 80
            table_size: 100
            backends:
              - 198.18.0.11
              - {address: 198.18.0.x}
              - {address: 198.18.0.13, vlan: 5000}
        """)
    assert [path for path, _ in found] == [
        "services[0].table_size",
        "services[0].backends[1].address",
        "services[0].backends[2].vlan",
    ]
    assert found[0][1].endswith("(line 5)")
    assert found[1][1].endswith("(line 8)")


def test_cross_field_rules_of_different_services_are_all_reported(problems: Problems) -> None:
    found = problems("""\
        interfaces: [eth0]
        services:
          - {name: a, vip: 192.0.2.100, port: 80, need: 2, backends: [198.18.0.11]}
          - {name: b, vips: [192.0.2.101, 192.0.2.101], port: 80, backends: [198.18.0.11, 198.18.0.11]}
        """)
    assert [path for path, _ in found] == ["services[0].need", "services[1].vips[1]", "services[1].backends[1].address"]


def test_same_vip_and_port_with_other_protocol_is_fine(load: Load) -> None:
    loaded = load(
        f"interfaces: [eth0]\nservices:\n- {SERVICE}\n- {{vip: 192.0.2.100, port: 80, protocol: udp, "
        "checks: [], backends: [198.18.0.11]}"
    )
    assert [service.name for service in loaded.services] == ["192.0.2.100:80/tcp", "192.0.2.100:80/udp"]


def test_shared_vip_with_equal_route_attributes_is_fine(load: Load) -> None:
    loaded = load(
        f"interfaces: [eth0]\n{BGP}\nservices:\n- {{vip: 192.0.2.100, port: 80, bgp: {{med: 5}}, "
        "backends: [198.18.0.11]}\n- {vip: 192.0.2.100, port: 443, bgp: {med: 5}, backends: [198.18.0.11]}"
    )
    assert {loaded.route_attributes(service).med for service in loaded.services} == {5}


def test_api_off_loopback_with_a_token_is_fine(load: Load) -> None:
    loaded = load("interfaces: [eth0]\napi: {listen: '[::]:9443', token_file: /etc/xdplb/token}")
    assert (str(loaded.api.host), loaded.api.port) == ("::", 9443)


@pytest.mark.parametrize(
    ("document", "path", "message"),
    [
        ("interfaces: [eth0]\npolicies: {web: 1}", "policies.web", "expected a mapping, got a number"),
        ("interfaces: [eth0]\napi: [127.0.0.1:9180]", "api", "expected a mapping, got a list"),
        ("interfaces: eth0", "interfaces", "expected a list, got a string"),
        ("interfaces: [eth0]\nservices:", "services", "expected a list, got nothing (null)"),
    ],
)
def test_wrong_shape(document: str, path: str, message: str, problems: Problems) -> None:
    assert problems(document) == [(path, f"{message} (line {document.count(chr(10)) + 1})")]


def test_bad_policy_name_is_reported_at_its_key(problems: Problems) -> None:
    assert problems("interfaces: [eth0]\npolicies:\n  web: {checks: []}\n  my web: {checks: []}\n") == [
        ('policies["my web"]', "bad policy name 'my web': up to 64 letters, digits and _ . - (line 4)")
    ]
