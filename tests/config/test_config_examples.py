"""Every example in config/examples/ loads; the demo one says what the demo lab needs."""

import ipaddress
from pathlib import Path

import pytest

import config

EXAMPLES = Path(config.__file__).parent / "examples"


def test_the_three_named_examples_exist() -> None:
    assert {"minimal.yaml", "full.yaml", "demo.yaml"} <= {path.name for path in EXAMPLES.glob("*.yaml")}


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda path: path.name)
def test_example_loads(path: Path) -> None:
    loaded = config.load_config(path)
    assert loaded.interfaces
    for service, backend in loaded.backends():
        checks = loaded.resolved_checks(service, backend)
        assert all(check.port is not None and 1 <= check.port <= 65535 for check in checks), "every port resolved"
        assert checks or service.protocol == "udp", f"{service.backend_key(backend)} runs no check"


def test_demo_example_is_the_lab() -> None:
    loaded = config.load_config(EXAMPLES / "demo.yaml")
    (service,) = loaded.services
    assert (service.vips, service.port, service.protocol) == ((ipaddress.ip_address("192.0.2.100"),), 80, "tcp")
    assert [str(b.address) for b in service.backends] == ["198.18.0.11", "198.18.0.12", "198.18.0.13"]
    for backend in service.backends:
        (check,) = loaded.resolved_checks(service, backend)
        assert isinstance(check, config.HttpCheck)
        assert (check.path, check.port) == ("/", 80)
    assert loaded.bgp is not None
    assert loaded.bgp.local_as == 65001
    assert [(str(p.address), p.peer_as) for p in loaded.bgp.peers] == [("198.18.0.1", 65000)]
    assert loaded.api.listen == "127.0.0.1:9180"


def test_full_example_uses_every_section_and_level_of_inheritance() -> None:
    loaded = config.load_config(EXAMPLES / "full.yaml")
    assert loaded.bgp is not None and loaded.policies and loaded.api.token_file is not None
    by_key = {service.backend_key(b): loaded.resolved_checks(service, b) for service, b in loaded.backends()}
    assert [c.type for c in by_key["web/198.18.0.11"]] == ["http"]  # service policy
    assert getattr(by_key["web/198.18.0.15"][0], "expect_body") == "ready"  # backend checks
    assert [(c.type, c.port) for c in by_key["web-tls/198.18.0.11"]] == [("https", 443), ("tcp", 80)]
    assert by_key["dns/198.18.0.23"] == ()  # checks: []
    assert [(c.type, c.port) for c in by_key["192.0.2.25:25/tcp/198.18.0.31"]] == [("tcp", 25)]  # default
    states = {b.state for s in loaded.services for b in s.backends}
    assert states == set(config.AdminState)
