"""Values that must be refused: numbers and booleans only as such, addresses with one spelling, real identifiers.

On main, ``need: no`` silently meant 0 ("announce regardless"), ``port: 0x50`` meant 80, and ``2001:db8::100%x``
and ``::ffff:192.0.2.1`` were addresses of their own, so one listener could get two services.
"""

from collections.abc import Callable

import pytest

import config

Problems = Callable[..., list[tuple[str, str]]]  # the `problems` fixture

INT = "(a whole number in decimal digits, unquoted)"


def service(**fields: str) -> str:
    body = {"vip": "192.0.2.100", "port": "80", "backends": "[198.18.0.11]"} | fields
    return "interfaces: [eth0]\nservices:\n- {" + ", ".join(f"{k}: {v}" for k, v in body.items()) + "}\n"


BGP = (
    "interfaces: [eth0]\nbgp: {local_as: 65001, router_id: 192.0.2.1, peers: [{address: 198.18.0.1, peer_as: 65000}]}\n"
)

CASES = [
    (service(port="yes"), "services[0].port", f"input should be a valid integer, got 'yes' {INT}"),
    (service(need="no"), "services[0].need", f"input should be a valid integer, got 'no' {INT}"),
    (service(port="0x50"), "services[0].port", f"got '0x50' {INT}"),
    (service(port="0o120"), "services[0].port", f"got '0o120' {INT}"),
    (service(port="080"), "services[0].port", f"got '080' {INT}"),
    (service(port="8_0"), "services[0].port", f"got '8_0' {INT}"),
    (service(port="1:20"), "services[0].port", f"got '1:20' {INT}"),
    (service(port="80.0"), "services[0].port", "input should be a valid integer, got 80.0"),
    (service(port="1e2"), "services[0].port", "input should be a valid integer, got 100.0"),
    (service(port="true"), "services[0].port", "input should be a valid integer, got True"),
    (service(port="'80'"), "services[0].port", f"got '80' {INT}"),
    (service(table_size="'16381'"), "services[0].table_size", f"got '16381' {INT}"),
    (service(backends="[{address: 198.18.0.11, weight: yes}]"), "services[0].backends[0].weight", "got 'yes'"),
    (service(backends="[{address: 198.18.0.11, vlan: 0x10}]"), "services[0].backends[0].vlan", "got '0x10'"),
    (
        service(sticky="yes"),
        "services[0].sticky",
        "input should be a valid boolean, got 'yes' (true or false, unquoted)",
    ),
    (service(sticky="1"), "services[0].sticky", "input should be a valid boolean, got 1"),
    (
        service(checks="[{type: tcp, timing: {interval: '2'}}]"),
        "services[0].checks[0].timing.interval",
        "input should be a valid number, got '2' (a number, unquoted)",
    ),
    (service(checks="[{type: tcp, timing: {rise: on}}]"), "services[0].checks[0].timing.rise", "got 'on'"),
    (service(checks="[{type: http, keepalive: off}]"), "services[0].checks[0].keepalive", "got 'off'"),
    ("interfaces: [eth0]\ndataplane: {flow_table_size: 1_000}\n", "dataplane.flow_table_size", "got '1_000'"),
    (BGP.replace("peer_as: 65000", "peer_as: 65_000"), "bgp.peers[0].peer_as", "got '65_000'"),
    (BGP.replace("peer_as: 65000", "peer_as: 65000, hold_time: 1:30"), "bgp.peers[0].hold_time", "got '1:30'"),
    (BGP.replace("peer_as: 65000", "peer_as: 65000, passive: no"), "bgp.peers[0].passive", "got 'no'"),
    (BGP.replace("192.0.2.1,", "0.0.0.0,"), "bgp.router_id", "0.0.0.0 is not a BGP identifier (RFC 6286)"),
    (BGP.replace("192.0.2.1,", "1,"), "bgp.router_id", "expected an IPv4 address as a string, got 1"),
    (service(vip="'2001:db8::100%x'"), "services[0].vip", "2001:db8::100%x: an IPv6 zone id (%x) is not accepted"),
    (
        service(vip="'::ffff:192.0.2.1'"),
        "services[0].vip",
        "::ffff:c000:201 is an IPv4-mapped IPv6 address: write 192.0.2.1",
    ),
    (service(vip="'::ffff:192.0.2.1/128'"), "services[0].vip", "is an IPv4-mapped IPv6 address"),
    (service(backends="['fe80::1%eth0']"), "services[0].backends[0].address", "an IPv6 zone id (%eth0)"),
    (BGP.replace("198.18.0.1,", "'::ffff:198.18.0.1',"), "bgp.peers[0].address", "IPv4-mapped"),
    (
        BGP.replace("peer_as: 65000", "peer_as: 65000, local_address: 'fe80::2%eth0'").replace(
            "198.18.0.1,", "'fe80::1',"
        ),
        "bgp.peers[0].local_address",
        "zone id",
    ),
    (
        BGP.replace("peers:", "attributes: {next_hop: '::ffff:198.18.0.1'}, peers:"),
        "bgp.attributes.next_hop",
        "IPv4-mapped",
    ),
    (
        BGP.replace("peers:", "attributes: {next_hop: 0.0.0.0}, peers:"),
        "bgp.attributes.next_hop",
        "0.0.0.0 is not a host address",
    ),
    (
        BGP.replace("peers:", "attributes: {next_hop: 224.0.0.1}, peers:"),
        "bgp.attributes.next_hop",
        "224.0.0.1 is not a host address",
    ),
    ("interfaces: [eth0]\napi: {listen: '[fe80::1%eth0]:9180'}\n", "api.listen", "an IPv6 zone id (%eth0)"),
    ("interfaces: [eth0]\napi: {listen: '[::ffff:127.0.0.1]:9180'}\n", "api.listen", "IPv4-mapped"),
    ("interfaces: [eth0]\napi: {token_file: ''}\n", "api.token_file", "empty: give the path of the token file"),
    ("interfaces: [eth0]\napi: {listen: '[::]:9180', token_file: ' '}\n", "api.token_file", "empty"),
]


@pytest.mark.parametrize(("document", "path", "message"), CASES, ids=[f"{c[1]}:{c[2][:40]}" for c in CASES])
def test_value_is_refused_at_its_path(document: str, path: str, message: str, problems: Problems) -> None:
    found = problems(document)
    assert len(found) == 1, found
    assert found[0][0] == path
    assert message in found[0][1], found[0][1]


def test_a_zone_id_no_longer_makes_a_second_service_on_one_listener(problems: Problems) -> None:
    found = problems(
        "interfaces: [eth0]\nservices:\n"
        "- {vip: '2001:db8::100', port: 80, backends: [198.18.0.11]}\n"
        "- {vip: '2001:db8::100%x', port: 80, backends: [198.18.0.11]}\n"
    )
    assert [path for path, _ in found] == ["services[1].vip"]


def test_numbers_and_booleans_of_their_kind_are_accepted() -> None:
    loaded = config.parse_config(
        service(port="+80", need="0", sticky="true", checks="[{type: tcp, timing: {interval: 2, timeout: 0.5}}]"),
        source="ok.yaml",
    )
    assert (loaded.services[0].port, loaded.services[0].need, loaded.services[0].sticky) == (80, 0, True)
    assert loaded.services[0].checks is not None and loaded.services[0].checks[0].timing.interval == 2.0


def test_words_that_yaml_1_1_read_as_booleans_are_strings_where_a_string_is_wanted() -> None:
    loaded = config.parse_config(service(name="no", checks="[{type: dns, name: on.example.}]"), source="ok.yaml")
    assert loaded.services[0].name == "no"
