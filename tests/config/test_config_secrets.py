"""What the configuration lets others see: errors never quote a value that is not on the allow-list, and a config
dump shows only allowed values (``config._disclosure``)."""

import json

import pytest

import config
from tests.config import conftest

Problems = conftest.Problems

BGP = "bgp: {local_as: 65001, router_id: 192.0.2.1, peers: [{address: 198.18.0.1, peer_as: 65000, PEER}]}"
SERVICE = "services: [{vip: 192.0.2.100, port: 80, checks: [CHECK], backends: [198.18.0.11]}]"


@pytest.mark.parametrize(
    ("document", "path", "message", "secret"),
    [
        (BGP.replace("PEER", "password: 20251201"), "bgp.peers[0].password", "valid string, got a number", "20251201"),
        (SERVICE.replace("CHECK", "{type: tcp, send: 4711}"), "services[0].checks[0].send", "got a number", "4711"),
        (
            SERVICE.replace("CHECK", "{type: http, path: '/a b?token=hunter2'}"),
            "services[0].checks[0].path",
            "<redacted>: no spaces, CR, LF or NUL",
            "hunter2",
        ),
        (
            SERVICE.replace("CHECK", "{type: http, path: 'token=hunter2'}"),
            "services[0].checks[0].path",
            "should match pattern '^/', got a string",
            "hunter2",
        ),
        (
            SERVICE.replace("CHECK", "{type: http, headers: {'X-Key hunter2': v}}"),
            "services[0].checks[0].headers",
            "bad header name <redacted>",
            "hunter2",
        ),
        (
            SERVICE.replace("CHECK", "{type: http, headers: {X-Key: [hunter2]}}"),
            "services[0].checks[0].headers.X-Key",
            "valid string",
            "hunter2",
        ),
        ("dataplane: {hash_seed: 99999999999}", "dataplane.hash_seed", "got a number", "99999999999"),
    ],
)
def test_an_error_never_quotes_a_value_off_the_allow_list(
    problems: Problems, document: str, path: str, message: str, secret: str
) -> None:
    found = problems(f"interfaces: [eth0]\n{document}\n")
    assert [p for p, _ in found] == [path]
    assert message in found[0][1]
    with pytest.raises(config.ConfigError) as caught:
        config.parse_config(f"interfaces: [eth0]\n{document}\n", source="x.yaml")
    assert secret not in str(caught.value)


def test_an_error_still_quotes_a_safe_value(problems: Problems) -> None:
    found = problems("interfaces: [eth0]\nservices: [{vip: 192.0.2.x, port: 99999, backends: [198.18.0.11]}]\n")
    assert sorted(message.split(" (line")[0] for _, message in found) == [
        "input should be less than or equal to 65535, got 99999",
        "not an IP address: '192.0.2.x'",
    ]


FULL = """\
interfaces: [eth0]
dataplane: {hash_seed: 12345}
bgp: {local_as: 65001, router_id: 192.0.2.1, peers: [{address: 198.18.0.1, peer_as: 65000, password: md5pw}]}
services:
  - name: web
    vip: 192.0.2.100
    port: 80
    checks:
      - {type: http, path: "/health?key=qs-secret", headers: {Host: a.example, X-Custom: hdr-secret,
         Authorization: "Bearer auth-secret"}}
      - {type: tcp, send: "AUTH tcp-secret\\r\\n", expect: "+OK"}
    backends: [198.18.0.11]
"""


def test_a_dump_shows_only_allowed_values() -> None:
    dump = config.redact(config.parse_config(FULL, source="x.yaml").model_dump(mode="json"))
    text = json.dumps(dump)
    for secret in ("12345", "md5pw", "qs-secret", "hdr-secret", "auth-secret", "tcp-secret"):
        assert secret not in text
    http, tcp = dump["services"][0]["checks"]
    assert http["path"] == "/health?<redacted>"
    assert http["headers"] == {"Host": "a.example", "X-Custom": "<redacted>", "Authorization": "<redacted>"}
    assert (tcp["send"], tcp["expect"]) == ("<redacted>", "+OK")
    assert dump["dataplane"]["hash_seed"] == "<redacted>"
    assert dump["bgp"]["peers"][0]["password"] == "<redacted>"
    assert dump["services"][0]["backends"][0]["address"] == "198.18.0.11"
    assert dump["services"][0]["vips"] == ["192.0.2.100"]


def test_a_field_not_on_the_list_is_redacted() -> None:
    assert config.redact({"api": {"listen": "127.0.0.1:9180", "new_field": "x"}, "new_section": {"a": 1}}) == {
        "api": {"listen": "127.0.0.1:9180", "new_field": "<redacted>"},
        "new_section": "<redacted>",
    }
