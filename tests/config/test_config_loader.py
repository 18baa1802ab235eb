"""Reading files: YAML and JSON, syntax errors with line and column, and the shape of ConfigError."""

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

import config

Load = Callable[..., config.XdplbConfig]  # the `load` fixture of conftest.py
Problems = Callable[..., list[tuple[str, str]]]  # the `problems` fixture

VALID = "interfaces: [eth0]\nservices: [{vip: 192.0.2.100, port: 80, backends: [198.18.0.11]}]\n"


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(VALID)
    assert config.load_config(path).services[0].port == 80
    assert config.load_config(str(path)).services[0].port == 80


def test_json_is_accepted_and_errors_get_lines(tmp_path: Path) -> None:
    document = {"interfaces": ["eth0"], "services": [{"vip": "192.0.2.100", "port": 80, "backends": ["198.18.0.11"]}]}
    path = tmp_path / "lb.json"
    path.write_text(json.dumps(document, indent=2))
    assert config.load_config(path).services[0].backends[0].address.exploded == "198.18.0.11"
    document["services"][0]["port"] = 0  # type: ignore[index]
    path.write_text(json.dumps(document, indent=2))
    with pytest.raises(config.ConfigError) as caught:
        config.load_config(path)
    assert str(caught.value) == f"{path}: services[0].port: input should be greater than or equal to 1, got 0 (line 8)"


def test_json_key_given_twice_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "lb.json"
    path.write_text('{"interfaces": ["eth0"],\n "api": {"listen": "127.0.0.1:1",\n "listen": "127.0.0.1:2"}}')
    with pytest.raises(config.ConfigError) as caught:
        config.load_config(path)
    assert caught.value.problems == (("api", "duplicate key 'listen' (line 3; first at line 2)"),)


def test_json_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "lb.json"
    path.write_text('{"interfaces": ["eth0"],\n "services": [}\n')
    with pytest.raises(config.ConfigError) as caught:
        config.load_config(path)
    assert str(caught.value) == f"{path}: line 2, column 15: bad JSON: Expecting value"


def test_yaml_syntax_error_names_file_line_and_column() -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.parse_config("interfaces: [eth0]\nservices:\n  - vip: 192.0.2.100\n    port: 80: 81\n", source="lb.yaml")
    assert str(caught.value) == "lb.yaml: line 4, column 13: bad YAML: mapping values are not allowed in this context"
    assert caught.value.problems == (
        ("", "line 4, column 13: bad YAML: mapping values are not allowed in this context"),
    )


def test_yaml_unclosed_flow_names_where_it_started() -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.parse_config("interfaces: [eth0\n", source="lb.yaml")
    assert str(caught.value).startswith("lb.yaml: line 2, column 1: bad YAML: ")
    assert "while parsing a flow sequence" in str(caught.value)


def test_two_documents_in_one_file_are_refused() -> None:
    with pytest.raises(config.ConfigError, match=r"lb.yaml: line 2, column 1: bad YAML: .*single document"):
        config.parse_config("interfaces: [eth0]\n---\ninterfaces: [eth1]\n", source="lb.yaml")


def test_a_key_given_twice_is_an_error(problems: Problems) -> None:
    found = problems("""\
        interfaces: [eth0]
        services:
          - vip: 192.0.2.100
            port: 80
            backends: [198.18.0.11]
            port: 81
        """)
    assert found == [("services[0]", "duplicate key 'port' (line 6; first at line 4)")]


def test_yaml_anchors_and_merge_keys_shorten_a_config(load: Load) -> None:
    loaded = load("""\
        interfaces: [eth0]
        services:
          - &web {name: web, vip: 192.0.2.100, port: 80, backends: [198.18.0.11, 198.18.0.12]}
          - <<: *web
            name: web-tls
            port: 443
        """)
    assert [(s.name, s.port, len(s.backends)) for s in loaded.services] == [("web", 80, 2), ("web-tls", 443, 2)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "test.yaml: the document is empty: expected a mapping with at least `interfaces`"),
        ("# only a comment\n", "test.yaml: the document is empty: expected a mapping with at least `interfaces`"),
        ("- eth0\n", "test.yaml: expected a mapping at the top of the document, got a list"),
        ("eth0\n", "test.yaml: expected a mapping at the top of the document, got a string"),
    ],
)
def test_a_document_that_is_not_a_mapping(text: str, message: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.parse_config(text, source="test.yaml")
    assert str(caught.value) == message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(config.ConfigError) as caught:
        config.load_config(path)
    assert str(caught.value) == f"{path}: cannot read the file: No such file or directory"


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("interfaces: [\xe9th0]\n".encode("latin-1"))
    with pytest.raises(config.ConfigError, match=r"latin1.yaml: not UTF-8 text: invalid continuation byte at byte 13"):
        config.load_config(path)


def test_config_error_is_an_xdplb_error_and_a_value_error_and_pickles() -> None:
    error = config.ConfigError("a.yaml", [("services[0].port", "bad"), ("", "whole file")])
    assert isinstance(error, config.XdplbError) and isinstance(error, ValueError)
    assert str(error) == "a.yaml: services[0].port: bad\na.yaml: whole file"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.source, copy.problems, str(copy)) == (error.source, error.problems, str(error))


def test_validate_config_takes_parsed_data() -> None:
    loaded = config.validate_config({"interfaces": ["eth0"]})
    assert loaded.services == ()
    with pytest.raises(config.ConfigError) as caught:
        config.validate_config({"interfaces": ["eth0"], "services": [{"vip": "192.0.2.100"}]}, source="api")
    assert str(caught.value) == "api: services[0].port: required, but missing"


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        ((), ""),
        (("services", 3, "backends", 1, "address"), "services[3].backends[1].address"),
        (("policies", "web-tls", "checks", 0), "policies.web-tls.checks[0]"),
        (("policies", "a b", "checks"), 'policies["a b"].checks'),
    ],
)
def test_format_path(loc: tuple[str | int, ...], path: str) -> None:
    assert config.format_path(loc) == path


def test_lines_point_at_the_key_in_block_style(problems: Problems) -> None:
    found = problems("""\
        interfaces:
          - eth0
        policies:
          web:
            checks:
              - type: http
                path: healthz
        """)
    assert found == [("policies.web.checks[0].path", "string should match pattern '^/', got a string (line 7)")]
