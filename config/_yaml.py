"""Reading YAML text with bounds, by the YAML 1.2 core schema: a node tree, then plain Python data.

PyYAML's own composer recurses once per level of nesting (libyaml's segfaults at about 50,000 levels, the Python
one raises RecursionError at about 1,000) and expands aliases without limit (a few KB of nested aliases make
billions of nodes). Here the node tree is composed from the event stream in a loop that refuses, before building
anything more:

- nesting deeper than ``MAX_DEPTH``;
- more than ``MAX_NODES`` nodes, counting an alias as many nodes as it stands for, each time it is used;
- an alias of a node that is still open (a recursive document).

Plain scalars resolve as YAML 1.2's core schema does, except that integers are plain decimal: ``true``/``false``
are the only booleans, ``yes``, ``no``, ``on``, ``0x50``, ``0o17``, ``010``, ``8_0``, ``1:20`` and ``2001-02-30``
stay strings (YAML 1.1 read them as booleans, numbers and dates). The explicit tags of the core schema (``!!str``,
``!!int``, ``!!float``, ``!!bool``, ``!!null``, ``!!seq``, ``!!map``) and merge keys (``<<: *defaults``) are
accepted; any other tag is an error.

>>> construct(compose("port: 80\\nsticky: yes\\nhex: 0x50\\n"))
{'port': 80, 'sticky': 'yes', 'hex': '0x50'}
"""

import math
import re
from typing import Any, ClassVar

import yaml
from yaml import constructor, nodes

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "MAX_NODES", "LimitError", "compose", "compose_counted", "construct"]

MAX_DEPTH = 64
"""Nested sequences and mappings; a full configuration needs about 8."""
MAX_NODES = 250_000
"""Nodes after alias expansion; the scale lab's 10,000 backends take about 30,000 (200,000 with a check each)."""
MAX_INT_DIGITS = 20
"""Digits of an integer; every integer field fits in 10."""

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_TAG = "tag:yaml.org,2002:"
_STR, _SEQ, _MAP, _MERGE = _TAG + "str", _TAG + "seq", _TAG + "map", _TAG + "merge"
_NULL = re.compile(r"~|null|Null|NULL|")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_OCTAL_LOOKING = re.compile(r"[-+]?0[0-9]+")  # YAML 1.1 read 010 as 8, YAML 1.2 as 10: neither, a string
_FLOAT = re.compile(
    r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)


class LimitError(yaml.MarkedYAMLError):
    """The document is nested too deeply, expands to too many nodes, or refers to itself."""


def _resolve(value: str, implicit: tuple[bool, bool]) -> str:
    """The tag of an untagged scalar: only a plain (unquoted) one can be anything but a string."""
    if not implicit[0]:
        return _STR
    if _NULL.fullmatch(value):
        return _TAG + "null"
    if value in _BOOL:
        return _TAG + "bool"
    if _INT.fullmatch(value):
        return _TAG + "int"
    if _FLOAT.fullmatch(value) and not _OCTAL_LOOKING.fullmatch(value):
        return _TAG + "float"
    if value == "<<":
        return _MERGE
    return _STR


class _Open:
    """A sequence or mapping being composed: its node, its anchor, its expanded size so far, a key awaiting its
    value."""

    __slots__ = ("anchor", "key", "node", "size")

    def __init__(self, node: nodes.CollectionNode, anchor: str | None) -> None:
        self.node = node
        self.anchor = anchor
        self.size = 1
        self.key: nodes.Node | None = None


def compose(text: str) -> nodes.Node | None:
    """The node tree of the single document in ``text`` (None if empty); yaml.YAMLError (LimitError for a bound)."""
    return compose_counted(text)[0]


def compose_counted(text: str, *, max_depth: int | None = None) -> tuple[nodes.Node | None, int]:
    """``compose``, nested at most ``max_depth`` levels (default ``MAX_DEPTH``), and the document's size in nodes as
    the bound counts them."""
    loader: Any = _Loader(text)  # Any: PyYAML's stubs leave the event API untyped
    try:
        loader.get_event()  # stream start
        if loader.check_event(yaml.StreamEndEvent):
            return None, 0
        loader.get_event()  # document start
        root, size = _compose_document(loader, MAX_DEPTH if max_depth is None else max_depth)
        loader.get_event()  # document end
        if not loader.check_event(yaml.StreamEndEvent):
            event = loader.get_event()
            raise yaml.composer.ComposerError(
                "expected a single document in the stream", None, "but found another document", event.start_mark
            )
        return root, size
    finally:
        loader.dispose()


def _compose_document(loader: Any, max_depth: int) -> tuple[nodes.Node, int]:
    anchors: dict[str, tuple[nodes.Node, int]] = {}  # complete anchored nodes and their expanded sizes
    open_anchors: set[str] = set()
    stack: list[_Open] = []
    total = 0
    while True:
        event: Any = loader.get_event()
        start: Any = event.start_mark  # Any: the C parser's marks are another class than the stubs say
        end: Any = event.end_mark
        node: nodes.Node
        if isinstance(event, yaml.AliasEvent):
            name = event.anchor
            if name in open_anchors:
                raise LimitError(None, None, f"alias *{name} refers to a node that contains it", start)
            if name not in anchors:
                raise yaml.composer.ComposerError(None, None, f"found undefined alias {name!r}", start)
            node, size = anchors[name]
        elif isinstance(event, yaml.ScalarEvent):
            tag = event.tag if event.tag not in (None, "!") else _resolve(event.value, event.implicit)
            node = nodes.ScalarNode(tag, event.value, start, end, style=event.style)
            size = 1
            if event.anchor is not None:
                anchors[event.anchor] = (node, 1)
        elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            if len(stack) >= max_depth:
                raise LimitError(None, None, f"nested more than {max_depth} levels deep", start)
            total += 1
            if isinstance(event, yaml.SequenceStartEvent):
                tag = event.tag if event.tag not in (None, "!") else _SEQ
                opened: nodes.CollectionNode = nodes.SequenceNode(tag, [], start, None, event.flow_style)
            else:
                tag = event.tag if event.tag not in (None, "!") else _MAP
                opened = nodes.MappingNode(tag, [], start, None, event.flow_style)
            stack.append(_Open(opened, event.anchor))
            if event.anchor is not None:
                open_anchors.add(event.anchor)
                anchors.pop(event.anchor, None)  # a name given again: aliases inside refer to the new node
            continue
        else:  # the end of a sequence or mapping
            closed = stack.pop()
            closed.node.end_mark = end
            node, size = closed.node, closed.size
            if closed.anchor is not None:
                open_anchors.discard(closed.anchor)
                anchors[closed.anchor] = (node, size)
            total -= size  # counted already: itself when it opened, its items as they came
        total += size
        if total > MAX_NODES:
            raise LimitError(
                None, None, f"more than {MAX_NODES:,} nodes (aliases count each time they are used)", start
            )
        if not stack:
            return node, total
        parent = stack[-1]
        parent.size += size
        if isinstance(parent.node, nodes.SequenceNode):
            parent.node.value.append(node)
        elif parent.key is None:
            parent.key = node
        else:
            parent.node.value.append((parent.key, node))
            parent.key = None


class _Constructor(constructor.SafeConstructor):
    """SafeConstructor restricted to the core schema, with bounded integers and merge keys flattened in a loop."""

    def construct_yaml_int(self, node: nodes.ScalarNode) -> int:
        text = str(self.construct_scalar(node))
        if not re.fullmatch(r"[-+]?[0-9]+", text):
            raise constructor.ConstructorError(None, None, f"{text[:40]!r} is not a decimal integer", node.start_mark)
        digits = len(text.lstrip("+-"))
        if digits > MAX_INT_DIGITS:
            message = f"an integer of {digits} digits (at most {MAX_INT_DIGITS})"
            raise constructor.ConstructorError(None, None, message, node.start_mark)
        return int(text)

    def construct_yaml_float(self, node: nodes.ScalarNode) -> float:
        text = str(self.construct_scalar(node))
        if not _FLOAT.fullmatch(text) or len(text) > 100:
            raise constructor.ConstructorError(None, None, f"{text[:40]!r} is not a number", node.start_mark)
        lowered = text.lower()
        if lowered.endswith(".inf"):
            return -math.inf if text.startswith("-") else math.inf
        return math.nan if lowered == ".nan" else float(text)

    def construct_yaml_bool(self, node: nodes.ScalarNode) -> bool:
        text = str(self.construct_scalar(node))
        if text not in _BOOL:
            raise constructor.ConstructorError(None, None, f"{text[:40]!r} is not true or false", node.start_mark)
        return _BOOL[text]

    def construct_yaml_null(self, node: nodes.ScalarNode) -> None:
        text = str(self.construct_scalar(node))
        if not _NULL.fullmatch(text):
            raise constructor.ConstructorError(None, None, f"{text[:40]!r} is not null", node.start_mark)
        return None

    def flatten_mapping(self, node: nodes.MappingNode) -> None:
        # PyYAML's version recurses along a chain of merges (`<<: *a` where a merges b, which merges c...): flatten
        # the mappings it merges first, depth first, so that each call finds them flat already.
        done: set[int] = set()
        stack: list[tuple[nodes.MappingNode, bool]] = [(node, False)]
        while stack:
            current, ready = stack.pop()
            if id(current) in done:
                continue
            if ready:
                super().flatten_mapping(current)
                done.add(id(current))
                continue
            stack.append((current, True))
            for key, value in current.value:
                if key.tag == _MERGE:
                    merged = value.value if isinstance(value, nodes.SequenceNode) else [value]
                    stack.extend((item, False) for item in merged if isinstance(item, nodes.MappingNode))

    yaml_constructors: ClassVar[dict[Any, Any]] = {
        _TAG + "null": construct_yaml_null,
        _TAG + "bool": construct_yaml_bool,
        _TAG + "int": construct_yaml_int,
        _TAG + "float": construct_yaml_float,
        _TAG + "str": constructor.SafeConstructor.construct_yaml_str,
        _TAG + "seq": constructor.SafeConstructor.construct_yaml_seq,
        _TAG + "map": constructor.SafeConstructor.construct_yaml_map,
        None: constructor.SafeConstructor.construct_undefined,
    }


def construct(root: nodes.Node) -> object:
    """The Python data of a node tree from ``compose``; yaml.YAMLError (a ConstructorError) if a scalar does not read
    as its tag says."""
    return _Constructor().construct_document(root)
