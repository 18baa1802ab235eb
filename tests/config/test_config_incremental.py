"""``config.IncrementalLoader``: what ``parse_config`` gives, with the unchanged pieces of the last document kept.

Every test compares the incremental reading with a full one of the same text: the same configuration (dump, digest,
resolved checks), or a ConfigError with the same message.
"""

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import config
from config import _yaml
from tests.config.test_config_fuzz import EXAMPLES, FRAGMENTS, FUZZ, _text, mutated_examples

BASE = textwrap.dedent("""\
    # the node
    interfaces: [eth0]
    policies:
      web:
        checks: [{type: http, path: /}]
    services:
    - name: a
      vip: 192.0.2.1
      port: 80
      policy: web
      backends: [198.18.0.1, 198.18.0.2]
    # between the items
    - name: b
      vip: 192.0.2.2
      port: 443
      backends:
      - address: 198.18.0.3
        weight: 2
    - name: c
      vip: 2001:db8::1
      port: 53
      protocol: udp
      checks: [{type: dns, name: example.org}]
      backends: [2001:db8::10]
    api:
      listen: 127.0.0.1:9180
""")

INDENTED = "\n".join(("  " + line if line.startswith(("-", " ")) else line) for line in BASE.split("\n"))
"""``BASE`` with the services indented under ``services:``."""


def _outcome(read: Callable[[], config.XdplbConfig]) -> tuple[object, ...]:
    try:
        cfg = read()
    except config.ConfigError as error:
        return ("refused", str(error))
    checks = [cfg.resolved_checks(service, backend) for service, backend in cfg.backends()]
    return ("accepted", cfg.model_dump(), cfg.digest(), checks)


def _same_as_full(loader: config.IncrementalLoader, text: str, source: str = "lb.yaml") -> tuple[object, ...]:
    incremental = _outcome(lambda: loader.parse(text, source=source))
    assert incremental == _outcome(lambda: config.parse_config(text, source=source))
    return incremental


def test_a_second_reading_keeps_the_unchanged_services_and_reads_the_changed_one() -> None:
    loader = config.IncrementalLoader()
    first = loader.parse(BASE, source="lb.yaml")
    changed = BASE.replace("port: 443", "port: 8443")
    second = loader.parse(changed, source="lb.yaml")
    assert second.services[0] is first.services[0]
    assert second.services[2] is first.services[2]
    assert second.services[1] is not first.services[1] and second.services[1].port == 8443
    _same_as_full(config.IncrementalLoader(), changed)
    _same_as_full(loader, changed)


def test_services_added_removed_and_reordered() -> None:
    loader = config.IncrementalLoader()
    _same_as_full(loader, BASE)
    items = BASE.split("- name: ")
    head, services = items[0], ["- name: " + item for item in items[1:]]
    tail = services[-1][services[-1].index("api:") :]
    services[-1] = services[-1][: services[-1].index("api:")]
    for order in ([2, 0, 1], [0], [1, 2], [0, 1, 2]):
        _same_as_full(loader, head + "".join(services[i] for i in order) + tail)


@pytest.mark.parametrize(
    "text",
    [
        # an alias in one service of an anchor in another: the pieces do not read alone, the whole does
        BASE.replace("backends: [198.18.0.1, 198.18.0.2]", "backends: &pool [198.18.0.1, 198.18.0.2]").replace(
            "backends: [2001:db8::10]", "backends: *pool"
        ),
        # a quoted scalar running over a cut
        BASE.replace("- name: b\n", "- name: 'b\n- x'\n"),
        # a block scalar keeping its trailing breaks, at the very end
        BASE + "dataplane:\n  hash_seed: 7\nbgp: |+\n  x\n\n",
        # the same top-level key twice
        BASE + "interfaces: [eth1]\n",
        # the same key twice within a service
        BASE.replace("port: 80\n", "port: 80\n  port: 81\n"),
        # document markers, directives, CRLF, a BOM, tabs
        "---\n" + BASE,
        "%YAML 1.2\n---\n" + BASE,
        BASE + "...\n",
        BASE.replace("\n", "\r\n"),
        "\ufeff" + BASE,
        BASE.replace("\n  vip: 192.0.2.2", "\n\tvip: 192.0.2.2"),
        # a service that is not a mapping, an empty item, a mistake in one service
        BASE.replace("- name: c", "- just text\n- name: c"),
        BASE.replace("- name: c", "-\n- name: c"),
        BASE.replace("port: 53", "port: 99999"),
        # `services:` with a flow value, or followed by a mapping
        BASE.replace("services:\n", "services: # the list\n"),
        "interfaces: [eth0]\nservices: []\n",
        "interfaces: [eth0]\nservices:\n  name: a\n",
        BASE.replace("services:\n", "services:\n  x: 1\n"),
        BASE.replace("services:\n", "services:\n  - x\n"),
        BASE.replace("- name: b", "  - name: b"),
        BASE.replace("  port: 443", "port: 443"),
        BASE.replace("  port: 443", " port: 443"),
        "  x: 1\n" + BASE,
        "- x\n" + BASE,
        BASE.split("\n", 1)[1].replace("\n", "\r"),
        BASE.replace("\napi:", "\u2028api:"),
        BASE.replace("\n- name: c", "\x85- name: c"),
        BASE.replace("\npolicies:", "\u2028policies:"),
        INDENTED,
        INDENTED.replace("services:\n", "services:\n  x: 1\n"),
    ],
)
def test_documents_that_are_not_plainly_cut_read_as_the_full_reading_says(text: str) -> None:
    loader = config.IncrementalLoader()
    _same_as_full(loader, BASE)
    _same_as_full(loader, text)
    _same_as_full(loader, BASE)


def test_a_mistake_is_reported_with_its_line_as_the_full_reading_reports_it() -> None:
    loader = config.IncrementalLoader()
    loader.parse(BASE, source="lb.yaml")
    refused = _same_as_full(loader, BASE.replace("198.18.0.3", "198.18.0.x"))
    assert refused[0] == "refused" and "services[1].backends[0].address" in str(refused[1])
    assert "(line 17)" in str(refused[1])


def test_the_node_budget_counts_every_piece_together(monkeypatch: pytest.MonkeyPatch) -> None:
    loader = config.IncrementalLoader()
    size = _yaml.compose_counted(BASE)[1]
    monkeypatch.setattr(_yaml, "MAX_NODES", size - 1)  # each piece is well under it; together they are over
    refused = _same_as_full(loader, BASE)
    assert refused[0] == "refused" and "nodes" in str(refused[1])
    monkeypatch.setattr(_yaml, "MAX_NODES", size)
    assert _same_as_full(loader, BASE)[0] == "accepted"


def test_the_depth_limit_counts_the_services_sequence(monkeypatch: pytest.MonkeyPatch) -> None:
    # 8 deep as a whole (root, services, service, backends, backend, checks, check, headers), 7 as a piece
    nested = BASE.replace(
        "[198.18.0.1, 198.18.0.2]", "[{address: 198.18.0.1, checks: [{type: http, headers: {X: y}}]}]"
    )
    for depth in range(6, 10):
        monkeypatch.setattr(_yaml, "MAX_DEPTH", depth)
        _same_as_full(config.IncrementalLoader(), nested)


def test_load_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(BASE)
    loader = config.IncrementalLoader()
    assert loader.load(str(path)) == config.load_config(path)
    path.write_bytes(b"\xff")
    with pytest.raises(config.ConfigError, match="not UTF-8"):
        loader.load(str(path))


@FUZZ
@given(base=st.sampled_from(EXAMPLES), document=mutated_examples())
def test_mutated_examples_read_as_the_full_reading_says(base: object, document: object) -> None:
    loader = config.IncrementalLoader()
    _same_as_full(loader, _text(base, False))
    _same_as_full(loader, _text(document, False))
    _same_as_full(loader, _text(base, False))


@FUZZ
@given(pieces=st.lists(FRAGMENTS, min_size=1, max_size=40))
def test_fragments_after_an_example_read_as_the_full_reading_says(pieces: list[str]) -> None:
    loader = config.IncrementalLoader()
    _same_as_full(loader, _text(EXAMPLES[0], False))
    _same_as_full(loader, "".join(pieces))


def test_anything_unexpected_in_a_piece_leaves_the_word_to_the_full_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    loader = config.IncrementalLoader()
    loader.parse(BASE, source="lb.yaml")

    def broken(*args: object, **kwargs: object) -> None:
        raise TypeError("a bug reading one piece")

    monkeypatch.setattr(config.ServiceConfig, "model_validate", broken)
    changed = BASE.replace("port: 443", "port: 8443")
    assert _outcome(lambda: loader.parse(changed, source="lb.yaml"))[0] == "accepted"
    assert loader.parse(changed, source="lb.yaml").services[1].port == 8443
