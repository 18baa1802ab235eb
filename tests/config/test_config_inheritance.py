"""Which checks a backend runs: backend checks/policy > service checks/policy > a default TCP connect check."""

from collections.abc import Callable
import pytest

import config

Load = Callable[..., config.XdplbConfig]  # the `load` fixture of conftest.py
Problems = Callable[..., list[tuple[str, str]]]  # the `problems` fixture

DOCUMENT = """\
interfaces: [eth0]
policies:
  web: {checks: [{type: http, path: /healthz}]}
  side: {checks: [{type: tcp, port: 8080}]}
services:
  - name: s
    vip: 192.0.2.100
    port: 80
    %s
    backends:
      - {address: 198.18.0.11, %s}
"""


def checks_of(load: Load, service_part: str, backend_part: str) -> tuple[config.Check, ...]:
    loaded = load(DOCUMENT % (service_part, backend_part))
    service = loaded.services[0]
    return loaded.resolved_checks(service, service.backends[0])


def summary(checks: tuple[config.Check, ...]) -> list[tuple[str, int | None, str | None]]:
    return [(check.type, check.port, getattr(check, "path", None)) for check in checks]


@pytest.mark.parametrize(
    ("service_part", "backend_part", "expected"),
    [
        ("", "", [("tcp", 80, None)]),
        ("policy: web", "", [("http", 80, "/healthz")]),
        ("checks: [{type: http, path: /s}]", "", [("http", 80, "/s")]),
        ("policy: web", "policy: side", [("tcp", 8080, None)]),
        ("policy: web", "checks: [{type: http, path: /b}]", [("http", 80, "/b")]),
        ("checks: [{type: http, path: /s}]", "policy: side", [("tcp", 8080, None)]),
        ("checks: [{type: http, path: /s}]", "checks: [{type: dns, port: 53}]", [("dns", 53, None)]),
        ("", "policy: web", [("http", 80, "/healthz")]),
        ("policy: web", "checks: []", []),
        ("checks: []", "", []),
        ("checks: []", "policy: side", [("tcp", 8080, None)]),
    ],
    ids=[
        "nothing: default tcp connect to the service port",
        "service policy",
        "service checks",
        "backend policy beats service policy",
        "backend checks beat service policy",
        "backend policy beats service checks",
        "backend checks beat service checks",
        "backend policy without a service one",
        "backend empty checks beat service policy",
        "service empty checks: no checks, no default",
        "backend policy beats service empty checks",
    ],
)
def test_the_nearest_level_wins(load: Load, service_part: str, backend_part: str, expected: list[object]) -> None:
    assert summary(checks_of(load, service_part, backend_part)) == expected


def test_checks_keep_their_parameters_and_only_the_port_is_filled(load: Load) -> None:
    (check,) = checks_of(
        load, "checks: [{type: http, path: /x, expect_status: '200,301', timing: {interval: 5, rise: 4}}]", ""
    )
    assert isinstance(check, config.HttpCheck)
    assert (check.port, check.expect_status, check.timing.interval, check.timing.rise) == (80, "200,301", 5.0, 4)


def test_policy_itself_is_left_as_written(load: Load) -> None:
    loaded = load(DOCUMENT % ("policy: web", ""))
    assert loaded.policies["web"].checks[0].port is None


def test_each_backend_resolves_on_its_own(load: Load) -> None:
    loaded = load("""\
        interfaces: [eth0]
        policies: {web: {checks: [{type: http}]}}
        services:
          - {name: a, vip: 192.0.2.100, port: 80, policy: web, backends: [198.18.0.11, {address: 198.18.0.12, checks: []}]}
          - {name: b, vip: 192.0.2.100, port: 443, backends: [198.18.0.11]}
        """)
    resolved = {service.backend_key(b): summary(loaded.resolved_checks(service, b)) for service, b in loaded.backends()}
    assert resolved == {
        "a/198.18.0.11": [("http", 80, "/")],
        "a/198.18.0.12": [],
        "b/198.18.0.11": [("tcp", 443, None)],
    }


def test_udp_service_with_a_service_policy_needs_no_default(load: Load) -> None:
    loaded = load("""\
        interfaces: [eth0]
        policies: {dns: {checks: [{type: dns}]}}
        services: [{vip: 192.0.2.53, port: 53, protocol: udp, policy: dns, backends: [198.18.0.11]}]
        """)
    service = loaded.services[0]
    assert summary(loaded.resolved_checks(service, service.backends[0])) == [("dns", 53, None)]


def test_udp_backend_checks_cover_a_service_without_any(load: Load, problems: Problems) -> None:
    document = """\
        interfaces: [eth0]
        services: [{vip: 192.0.2.53, port: 53, protocol: udp, backends: [{address: 198.18.0.11, checks: %s}]}]
        """
    loaded = load(document % "[{type: dns}]")
    assert loaded.resolved_checks(loaded.services[0], loaded.services[0].backends[0])[0].type == "dns"
    assert problems(document % "null")[0][0] == "services[0].checks"


def test_a_backend_of_another_config_is_refused(load: Load) -> None:
    loaded = load(DOCUMENT % ("", ""))
    other = load(DOCUMENT.replace("198.18.0.11", "198.18.0.99") % ("", ""))
    with pytest.raises(KeyError, match="backend s/198.18.0.99 is not in this configuration"):
        loaded.resolved_checks(other.services[0], other.services[0].backends[0])
