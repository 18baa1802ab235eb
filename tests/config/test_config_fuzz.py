"""A fuzzer of configuration documents: each is accepted, or refused with a ConfigError that starts with the file name.

Two kinds of document: the examples of ``config/examples`` with a few mutations (a value replaced by a hostile
scalar, a key dropped, a subtree duplicated, aliased or nested), written as YAML or JSON; and text made of YAML
fragments (flow and block collections, anchors, aliases, tags, merge keys, scalars YAML 1.1 and 1.2 read
differently). Anything but a ConfigError, or a message without the file name, fails. With CI=true it runs 2,000
examples of each kind; locally fewer.
"""

import json
import os
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import config

EXAMPLES = [
    yaml.safe_load(path.read_text()) for path in sorted((Path(config.__file__).parent / "examples").glob("*.yaml"))
]
EXAMPLES_CI = 2000 if os.environ.get("CI") == "true" else 150
FUZZ = settings(max_examples=EXAMPLES_CI, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HOSTILE_SCALARS = [
    "yes",
    "no",
    "on",
    "off",
    "0x50",
    "0o17",
    "010",
    "8_0",
    "1:20",
    "80.0",
    "1e3",
    ".inf",
    ".nan",
    "-0",
    "~",
    "",
    "2001-02-30",
    "9" * 5000,
    "-" + "9" * 30,
    "2001:db8::100%x",
    "::ffff:192.0.2.1",
    "0.0.0.0",
    "255.255.255.255",
    "/\u2603",
    "\u00e9",
    "\x00",
    "a\nb",
    "'",
    '"',
    "\\",
    "%",
    "{",
    "[",
    "*",
    "&",
    "!",
    "<<",
    "\U0001f600",
    "192.0.2.100/24",
    "fe80::1%eth0",
    "[::1]:9180",
    "65000:100",
    "200-299",
    "x" * 300,
]
SCALARS = st.one_of(
    st.sampled_from(HOSTILE_SCALARS),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=20),
)


def _paths(document: object, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in ``document`` (dict keys and list indexes), parents before children."""
    out = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            out += _paths(value, (*prefix, index))
    return out


def _get(document: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        document = document[part]
    return document


def _set(document: Any, path: tuple[Any, ...], value: object) -> Any:
    if not path:
        return value
    _get(document, path[:-1])[path[-1]] = value
    return document


@st.composite
def mutated_examples(draw: st.DrawFn) -> object:
    document: Any = json.loads(json.dumps(draw(st.sampled_from(EXAMPLES))))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(document)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["scalar", "drop", "copy", "wrap", "empty", "key"]))
        if action == "scalar" and draw(st.booleans()):
            document = _set(document, path, draw(SCALARS))
        elif action == "scalar":  # written into the text as is, unquoted: see _text
            document = _set(document, path, f"@@RAW{draw(st.integers(0, len(RAW) - 1))}@@")
        elif action == "drop" and path:
            parent = _get(document, path[:-1])
            del parent[path[-1]]
        elif action == "copy":
            document = _set(document, path, json.loads(json.dumps(_get(document, draw(st.sampled_from(paths))))))
        elif action == "wrap":
            document = _set(
                document, path, [_get(document, path)] if draw(st.booleans()) else {"k": _get(document, path)}
            )
        elif action == "empty":
            document = _set(document, path, draw(st.sampled_from([[], {}, None, ""])))
        elif action == "key" and isinstance(_get(document, path), dict):
            _get(document, path)[draw(st.sampled_from(["vip", "vips", "<<", "type", "port", "x y", "1"]))] = draw(
                SCALARS
            )
    return document


class _Dumper(yaml.SafeDumper):
    pass


RAW = [
    *HOSTILE_SCALARS,
    "!!int abc",
    "!!int",
    "!!float",
    "!!float x",
    "!!bool yes",
    "!!null x",
    "!!timestamp 2001-02-30",
    "!!binary aGk=",
    "!!set {a}",
    "!!omap [a: 1]",
    "!!python/name:os.system",
    "*undefined",
    "&x [*x]",
    "[[[[[[[[]]]]]]]]",
    "1e999",
    "-1e999",
    "NaN",
    "Infinity",
    "9" * 5000,
    "0." + "0" * 400 + "1",
    '"\\ud800"',
    '"\\x00"',
    "{a: 1, a: 2}",
    "[" * 70 + "]" * 70,
]
"""Scalar text written unquoted in place of a mutated value (YAML, or JSON where it is a JSON value at all)."""


def _text(document: object, as_json: bool) -> str:
    text = json.dumps(document) if as_json else yaml.dump(document, Dumper=_Dumper, allow_unicode=True)
    for index, raw in enumerate(RAW):
        text = text.replace(f'"@@RAW{index}@@"' if as_json else f"'@@RAW{index}@@'", raw)
    return text


def _assert_clean(text: str, source: str) -> None:
    try:
        config.parse_config(text, source=source)
    except config.ConfigError as error:
        assert str(error).startswith(f"{source}: "), str(error)[:500]
        assert error.problems, "a ConfigError with no problem"


@FUZZ
@given(document=mutated_examples(), as_json=st.booleans())
def test_mutated_examples_are_accepted_or_cleanly_refused(document: object, as_json: bool) -> None:
    source = "fuzz.json" if as_json else "fuzz.yaml"
    _assert_clean(_text(document, as_json), source)


FRAGMENTS = st.sampled_from(
    [
        "interfaces: [eth0]\n",
        "services:\n",
        "- ",
        "  ",
        "    ",
        "{",
        "}",
        "[",
        "]",
        ", ",
        ": ",
        "\n",
        "? ",
        "&a ",
        "*a",
        "&b ",
        "*b",
        "<<: *a\n",
        "!!int ",
        "!!str ",
        "!!float ",
        "!!bool ",
        "!!timestamp ",
        "!!binary ",
        "!!set ",
        "!foo ",
        "! ",
        "'",
        '"',
        "|\n",
        ">\n",
        "---\n",
        "...\n",
        "#",
        "vip: 192.0.2.100",
        "port: 80",
        "backends: [198.18.0.11]",
        "checks: [{type: http, path: /}]",
        "bgp: {local_as: 65001, router_id: 192.0.2.1}",
        "policies: {p: {checks: []}}",
        "dataplane: {max_services: 1}",
        "api: {listen: '[::]:1', token_file: ''}",
        "\t",
        "\\",
        "%YAML 1.1\n",
        "%TAG ! x\n",
        *HOSTILE_SCALARS[:30],
    ]
)


@FUZZ
@given(pieces=st.lists(FRAGMENTS, min_size=1, max_size=40), nesting=st.integers(0, 80))
def test_yaml_made_of_fragments_is_accepted_or_cleanly_refused(pieces: list[str], nesting: int) -> None:
    text = "".join(pieces)
    if nesting:
        text = "x: " + "[" * nesting + text.replace("\n", " ") + "]" * nesting + "\n" + text
    _assert_clean(text, "fragments.yaml")


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list("{}[],:'\"-?&*!|>#%@` \n\tab01.<~")), max_size=200))
def test_any_text_is_accepted_or_cleanly_refused(text: str) -> None:
    _assert_clean(text, "text.yaml")
    _assert_clean(text, "text.json")
