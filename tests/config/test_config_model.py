"""The typed model: defaults, shorthands, immutability, derived values (names, keys, route attributes, digest)."""

import ipaddress
from collections.abc import Callable

import pydantic
import pytest

import config

Load = Callable[..., config.XdplbConfig]  # the `load` fixture of conftest.py

MINIMAL = "interfaces: [eth0]\nservices: [{vip: 192.0.2.100, port: 80, backends: [198.18.0.11]}]"


def test_defaults_that_serve(load: Load) -> None:
    loaded = load(MINIMAL)
    assert loaded.interfaces == (config.InterfaceConfig(name="eth0", mode="auto"),)
    assert loaded.dataplane == config.DataplaneConfig(flow_table_size=65536, hash_seed=0, new_flow_rate_limit=125000)
    assert loaded.bgp is None
    assert (loaded.api.listen, str(loaded.api.host), loaded.api.port, loaded.api.token_file) == (
        "127.0.0.1:9180",
        "127.0.0.1",
        9180,
        None,
    )
    service = loaded.services[0]
    assert (service.name, service.protocol, service.sticky, service.table_size, service.need) == (
        "192.0.2.100:80/tcp",
        "tcp",
        False,
        16381,
        1,
    )
    backend = service.backends[0]
    assert (backend.weight, backend.state, backend.vlan) == (1, config.AdminState.ENABLED, None)


def test_shorthands_equal_their_long_forms(load: Load) -> None:
    short = load(MINIMAL)
    long = load("""\
        interfaces: [{name: eth0}]
        services: [{vips: [192.0.2.100], port: 80, backends: [{address: 198.18.0.11}]}]
        """)
    assert short == long
    assert short.digest() == long.digest()


def test_vip_given_as_a_host_prefix_is_the_address(load: Load) -> None:
    loaded = load("interfaces: [eth0]\nservices: [{vips: [192.0.2.100/32, '2001:db8::100/128'], port: 80, need: 0}]")
    assert loaded.services[0].vips == (ipaddress.ip_address("192.0.2.100"), ipaddress.ip_address("2001:db8::100"))


def test_ipv6_default_name_has_brackets(load: Load) -> None:
    loaded = load(
        "interfaces: [eth0]\nservices: [{vip: '2001:db8::100', port: 53, protocol: udp, checks: [], need: 0}]"
    )
    assert loaded.services[0].name == "[2001:db8::100]:53/udp"
    assert (
        config.ServiceConfig.model_validate({"vip": "2001:db8::1", "port": 1, "need": 0}).name == "[2001:db8::1]:1/tcp"
    )


def test_models_are_frozen(load: Load) -> None:
    loaded = load(MINIMAL)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        loaded.services[0].backends[0].weight = 5  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        loaded.api = config.ApiConfig()  # type: ignore[misc]


def test_backend_key_is_stable_and_names_service_and_address(load: Load) -> None:
    document = "interfaces: [eth0]\nservices: [{name: web, vip: 192.0.2.100, port: 80, backends: [%s]}]"
    first = load(document % "198.18.0.11")
    second = load(document % "{address: 198.18.0.11, weight: 9, state: drained}")
    keys = [s.backend_key(b) for s, b in first.backends()], [s.backend_key(b) for s, b in second.backends()]
    assert keys == (["web/198.18.0.11"], ["web/198.18.0.11"])


def test_admin_state_values() -> None:
    assert [state.value for state in config.AdminState] == ["enabled", "drained", "disabled"]
    assert config.AdminState("drained") is config.AdminState.DRAINED


def test_route_attributes_merge_service_over_defaults(load: Load) -> None:
    loaded = load("""\
        interfaces: [eth0]
        bgp: {local_as: 65001, router_id: 192.0.2.1, attributes: {med: 100, communities: ["65001:1"]}}
        services:
          - {name: a, vip: 192.0.2.100, port: 80, backends: [198.18.0.11]}
          - {name: b, vip: 192.0.2.101, port: 80, bgp: {med: 10}, backends: [198.18.0.11]}
          - {name: c, vip: 192.0.2.102, port: 80, bgp: {communities: []}, backends: [198.18.0.11]}
        """)
    attributes = [loaded.route_attributes(service) for service in loaded.services]
    assert [(a.med, a.communities) for a in attributes] == [(100, ("65001:1",)), (10, ("65001:1",)), (100, ())]


def test_route_attributes_without_bgp_section(load: Load) -> None:
    loaded = load(MINIMAL)
    assert loaded.route_attributes(loaded.services[0]) == config.RouteAttributes()


def test_digest_ignores_layout_and_follows_meaning(load: Load) -> None:
    base = load(MINIMAL).digest()
    assert len(base) == 64 and int(base, 16) >= 0
    spelled_out = load("""\
        # a comment
        interfaces:
          - {name: eth0, mode: auto}
        api: {listen: 127.0.0.1:9180}
        services:
          - vips: [192.0.2.100]
            port: 80
            protocol: tcp
            backends: [{address: 198.18.0.11, weight: 1}]
        """)
    assert spelled_out.digest() == base
    assert load(MINIMAL.replace("198.18.0.11", "198.18.0.12")).digest() != base
    assert load(MINIMAL.replace("port: 80", "port: 80, sticky: true")).digest() != base


def test_the_cached_digest_follows_a_copy_with_changes(load: Load) -> None:
    cfg = load(MINIMAL)
    before = cfg.digest()  # computed once, then cached on the frozen model
    changed = cfg.model_copy(update={"services": ()})
    assert changed.digest() != before and cfg.digest() == before


def test_dump_validates_back_to_an_equal_config(load: Load) -> None:
    loaded = load("""\
        interfaces: [eth0, {name: eth1, mode: generic}]
        bgp: {local_as: 65001, router_id: 192.0.2.1, peers: [{address: '2001:db8::1', peer_as: 65000}]}
        policies: {web: {checks: [{type: http, path: /h, timing: {interval: 3}}]}}
        services:
          - {vips: [192.0.2.100, '2001:db8::100'], port: 80, policy: web,
             backends: [198.18.0.11, {address: 198.18.0.12, state: drained, vlan: 7, checks: [{type: tcp}]}]}
        """)
    again = config.validate_config(loaded.model_dump(mode="json"))
    assert again == loaded
    assert again.digest() == loaded.digest()
    service = again.services[0]
    assert [c.type for c in again.resolved_checks(service, service.backends[1])] == ["tcp"]


def test_interface_and_service_can_be_built_in_python() -> None:
    service = config.ServiceConfig(vips=(ipaddress.ip_address("192.0.2.1"),), port=443, need=0)
    assert service.name == "192.0.2.1:443/tcp"
    built = config.XdplbConfig(interfaces=(config.InterfaceConfig(name="lo"),), services=(service,))
    assert built.services[0].name == "192.0.2.1:443/tcp"


def test_package_docstring_example_runs() -> None:
    import doctest

    result = doctest.testmod(config, raise_on_error=False)
    assert (result.attempted, result.failed) == (3, 0)


def test_digest_does_not_depend_on_a_password_value() -> None:
    import config as cfg_module

    text = "interfaces: [eth0]\nbgp: {local_as: 65001, router_id: 192.0.2.1, peers: [{address: 192.0.2.2, peer_as: 65000%s}]}\n"
    plain = cfg_module.parse_config(text % "", source="a.yaml").digest()
    secret1 = cfg_module.parse_config(text % ", password: hunter2", source="a.yaml").digest()
    secret2 = cfg_module.parse_config(text % ", password: correct-horse", source="a.yaml").digest()
    assert secret1 == secret2 != plain


def test_http_check_fields_cannot_inject_into_the_request() -> None:
    import pydantic
    import pytest

    import config as cfg_module

    for bad in (
        {"path": "/a b"},
        {"path": "/a\r\nX-Evil: 1"},
        {"host": "a\nb"},
        {"headers": {"X Bad": "1"}},
        {"headers": {"X-Ok": "1\r\nX-Evil: 2"}},
        {"timing": {"interval": 2, "timeout": 1, "fast_interval": 0.5}},
    ):
        with pytest.raises(pydantic.ValidationError):
            cfg_module.HttpCheck(**bad)
    assert cfg_module.HttpCheck(path="/healthz?x=1", headers={"X-Probe": "xdplb 1"}).path == "/healthz?x=1"


def test_the_digest_is_the_hash_of_the_whole_document_whatever_was_dumped_before() -> None:
    import hashlib
    import json
    from pathlib import Path

    def whole(cfg: config.XdplbConfig) -> str:
        document = cfg.model_dump(mode="json")
        for peer in (document.get("bgp") or {}).get("peers", ()):
            if peer.get("password") is not None:
                peer["password"] = "<set>"
        text = json.dumps(document, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    examples = sorted((Path(config.__file__).parent / "examples").glob("*.yaml"))
    loader = config.IncrementalLoader()
    for path in examples:
        first = loader.load(str(path))
        assert first.digest() == whole(first), path
        again = loader.load(str(path))  # the same service objects: their dumps are reused
        assert again.services == () or again.services[0] is first.services[0]
        assert again.digest() == whole(again) == first.digest(), path
    first = config.load_config(examples[0])
    emptied = first.model_copy(update={"services": ()})
    assert emptied.digest() == whole(emptied) and first.digest() == whole(first)
