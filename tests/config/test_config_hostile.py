"""Hostile documents are refused with one ConfigError naming the file: never a traceback, a crash or gigabytes.

Each case here made main raise something else, crash or run for a minute: RecursionError at 1,000 levels, a
segfault in libyaml's composer at 50,000, ValueError for a 5,000-digit integer, ``2001-02-30`` and ``!!int abc``,
62 s and 6 GB for an 8.9 KB document of nested aliases, MemoryError for a 50 MB file.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import config
from config import _loader, _yaml

VALID = "interfaces: [eth0]\nservices: [{vip: 192.0.2.100, port: 80, backends: [198.18.0.11]}]\n"


def refused(text: str, *, source: str = "hostile.yaml") -> str:
    """The ConfigError's text; fails if the text is accepted or raises anything else."""
    with pytest.raises(config.ConfigError) as caught:
        config.parse_config(text, source=source)
    message = str(caught.value)
    assert message.startswith(f"{source}: "), message
    return message


def laughs(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs": each level a list of ``width`` aliases of the level below (9 ** 9 leaves in 2 KB)."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "interfaces: [eth0]\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize("depth", [65, 1000, 50_000])
def test_deep_nesting_is_refused_before_composing(depth: int) -> None:
    message = refused("interfaces: " + "[" * depth + "]" * depth + "\n")
    assert message == "hostile.yaml: line 1, column 76: nested more than 64 levels deep"


def test_deep_mappings_are_refused_too() -> None:
    text = "".join(f"{'  ' * level}k:\n" for level in range(100)) + "  " * 100 + "v\n"
    assert "nested more than 64 levels deep" in refused(text)


def test_nesting_up_to_the_limit_composes() -> None:
    depth = _yaml.MAX_DEPTH - 1
    message = refused("interfaces: " + "[" * depth + "]" * depth + "\n")
    assert "nested" not in message and "interfaces[0]" in message


def test_50000_levels_in_a_separate_process_exit_1_without_a_crash(tmp_path: Path) -> None:
    # A separate process: on main this segfaults, which must not take pytest with it.
    path = tmp_path / "deep.yaml"
    path.write_text("interfaces: " + "[" * 50_000 + "]" * 50_000 + "\n")
    done = subprocess.run([sys.executable, "-m", "balancer.cli", "check", str(path)], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"{path}: line 1, column 76: nested more than 64 levels deep\n"


def test_deep_json_is_refused() -> None:
    assert refused("[" * 50_000 + "]" * 50_000, source="deep.json") == (
        "deep.json: bad JSON: nested more than 64 levels deep"
    )
    assert refused('{"interfaces": ' + "[" * 100 + "]" * 100 + "}", source="deep.json") == (
        "deep.json: bad JSON: nested more than 64 levels deep"
    )


def test_billion_laughs_is_refused_at_once() -> None:
    started = time.monotonic()
    message = refused(laughs())
    assert message.endswith("more than 250,000 nodes (aliases count each time they are used)")
    assert time.monotonic() - started < 5  # main: 62 s and 6 GB for the 8.9 KB version


def test_aliases_and_merge_keys_within_the_budget_still_work() -> None:
    text = (
        "interfaces: &ifs [eth0]\n"
        "services:\n"
        "- &web {vip: 192.0.2.100, port: 80, backends: [198.18.0.11, 198.18.0.12]}\n"
        "- {<<: *web, port: 443}\n"
    )
    parsed = config.parse_config(text, source="ok.yaml")
    assert [(s.port, len(s.backends)) for s in parsed.services] == [(80, 2), (443, 2)]


def test_a_flat_document_over_the_node_budget_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_yaml, "MAX_NODES", 1000)
    assert refused("interfaces: [" + ", ".join(["eth0"] * 1000) + "]\n").endswith(
        "line 1, column 5996: more than 1,000 nodes (aliases count each time they are used)"
    )


def test_a_recursive_alias_is_refused() -> None:
    assert refused("interfaces: &a [eth0, *a]\n") == (
        "hostile.yaml: line 1, column 23: alias *a refers to a node that contains it"
    )


def test_a_long_chain_of_merge_keys_is_flattened_in_a_loop() -> None:
    # PyYAML flattens `<<` chains recursively, and here the whole chain is met before any link of it is flattened
    # (mappings are constructed level by level). The node budget bounds the chain at about 500 links.
    chain = ["  - &m0 {interfaces: [eth0]}"] + [f"  - &m{i} {{<<: *m{i - 1}}}" for i in range(1, 400)]
    message = refused("x:\n" + "\n".join(chain) + "\ntop: {<<: *m399}\n")
    assert message.endswith("hostile.yaml: top: unknown key (line 402)"), message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "interfaces: [eth0]\ndataplane: {hash_seed: " + "9" * 5000 + "}\n",
            "hostile.yaml: line 2, column 24: bad YAML: an integer of 5000 digits (at most 20)",
        ),
        (
            "interfaces: [eth0]\ndataplane: {hash_seed: !!int " + "9" * 5000 + "}\n",
            "hostile.yaml: line 2, column 24: bad YAML: an integer of 5000 digits (at most 20)",
        ),
        (
            "interfaces: [eth0]\ndataplane: {hash_seed: !!int abc}\n",
            "hostile.yaml: line 2, column 24: bad YAML: 'abc' is not a decimal integer",
        ),
        (
            "interfaces: [eth0]\ndataplane: {hash_seed: !!timestamp 2001-02-30}\n",
            "hostile.yaml: line 2, column 24: bad YAML: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:timestamp'",
        ),
        (
            "interfaces: [eth0]\ndataplane: {hash_seed: !!float abc}\n",
            "hostile.yaml: line 2, column 24: bad YAML: 'abc' is not a number",
        ),
        (
            "interfaces: [eth0]\napi: {listen: !!binary aGVsbG8=}\n",
            "hostile.yaml: line 2, column 15: bad YAML: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:binary'",
        ),
        (
            "interfaces: !!python/object:os.system [eth0]\n",
            "hostile.yaml: line 1, column 13: bad YAML: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object:os.system'",
        ),
        (
            "interfaces: [eth0]\nservices: [{vip: 192.0.2.100, port: 2001-02-30, backends: [198.18.0.11]}]\n",
            "hostile.yaml: services[0].port: input should be a valid integer, got '2001-02-30' "
            "(a whole number in decimal digits, unquoted) (line 2)",
        ),
        (
            "interfaces: [eth0]\nx: *nowhere\n",
            "hostile.yaml: line 2, column 4: bad YAML: found undefined alias 'nowhere'",
        ),
        (
            "? [a, b]\n: c\n",
            "hostile.yaml: line 1, column 3: bad YAML: found unhashable key (while constructing a mapping)",
        ),
    ],
    ids=[
        "5000 digits",
        "!!int 5000 digits",
        "!!int abc",
        "!!timestamp 2001-02-30",
        "!!float abc",
        "!!binary",
        "python tag",
        "2001-02-30 is a string",
        "undefined alias",
        "unhashable key",
    ],
)
def test_scalars_that_do_not_read_as_their_tag(text: str, message: str) -> None:
    assert refused(text) == message


def test_big_integers_in_json() -> None:
    text = '{"interfaces": ["eth0"], "dataplane": {"hash_seed": ' + "9" * 5000 + "}}"
    assert refused(text, source="big.json") == "big.json: bad JSON: an integer of 5000 digits (at most 20)"
    assert refused('{"interfaces": ["eth0"], "dataplane": {"hash_seed": NaN}}', source="nan.json") == (
        "nan.json: bad JSON: NaN is not a JSON number"
    )


def test_a_50_mb_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("wb") as file:
        file.truncate(50 << 20)  # sparse: costs no disk
    with pytest.raises(config.ConfigError) as caught:
        config.load_config(path)
    assert str(caught.value) == f"{path}: the file is larger than 16 MiB"
    with pytest.raises(config.ConfigError, match="the text is longer than 16 Mi characters"):
        config.parse_config(" " * (_loader.MAX_BYTES + 1), source="big.yaml")


def test_a_file_that_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.load_config(tmp_path)
    assert str(caught.value) == f"{tmp_path}: cannot read the file: Is a directory"
    with pytest.raises(config.ConfigError, match="cannot read the file: embedded null byte"):
        config.load_config("a\0b.yaml")


def test_a_million_wrong_items_give_100_problems_and_a_count(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.parse_config("interfaces: [eth0]\nservices: [" + ", ".join(["0"] * 150) + "]\n", source="many.yaml")
    problems = caught.value.problems
    assert len(problems) == 101
    assert problems[0] == ("services[0]", "expected a mapping, got a number (line 2)")
    assert problems[-1] == ("", "and 50 more problems")


def test_a_long_refused_value_is_shortened_in_the_message() -> None:
    message = refused("interfaces: [eth0]\ndataplane: {flow_table_size: '" + "x" * 10_000 + "'}\n")
    assert len(message) < 300 and "... (10002 characters)" in message


def test_json_and_yaml_agree_on_values() -> None:
    document = {
        "interfaces": ["eth0"],
        "services": [{"vip": "192.0.2.100", "port": 80, "need": 0, "sticky": True, "backends": ["198.18.0.11"]}],
    }
    assert config.parse_config(json.dumps(document), source="a.json") == config.parse_config(
        json.dumps(document), source="a.yaml"
    )
