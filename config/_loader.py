"""Reading a configuration file: YAML (or JSON) text to a validated ``XdplbConfig`` or one ``ConfigError``.

Parsing and validating are separate steps: YAML syntax errors carry a line and column, validation errors a path in
the document (``services[3].backends[1].address``), with the line added when the text is at hand.
"""

import collections
import difflib
import functools
import json
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from config import _disclosure, _yaml
from config._errors import ConfigError
from config._root import XdplbConfig
from config._types import Loc

__all__ = [
    "MAX_BYTES",
    "MAX_PROBLEMS",
    "duplicate_keys",
    "format_path",
    "load_config",
    "parse_config",
    "read_text",
    "validate_config",
]

MAX_BYTES = 16 * 1024 * 1024
"""The largest configuration read: the scale lab's 10,000 backends take well under 1 MiB."""
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SHOWN_CHARS = 60  # of a refused value, in a message
MAX_PROBLEMS = 100
"""Problems described in one ConfigError; the rest are counted."""


def load_config(path: str | os.PathLike[str]) -> XdplbConfig:
    """Read and validate the file at ``path``; ``.json`` files are read as JSON, others as YAML.

    ConfigError, never another exception, for anything the file holds: see ``config._yaml`` for the bounds.
    """
    source = os.fspath(path)
    return parse_config(read_text(source), source=source)


def read_text(source: str) -> str:
    """The text of the file at ``source``: ConfigError if it cannot be read, is too large or is not UTF-8."""
    try:
        with open(source, "rb") as file:
            raw = file.read(MAX_BYTES + 1)  # not stat(): a FIFO or /dev/zero has no size
    except OSError as error:
        raise ConfigError(source, [("", f"cannot read the file: {error.strerror or error}")]) from None
    except ValueError as error:  # a NUL in the path
        raise ConfigError(source, [("", f"cannot read the file: {error}")]) from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(source, [("", f"the file is larger than {MAX_BYTES >> 20} MiB")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(source, [("", f"not UTF-8 text: {error.reason} at byte {error.start}")]) from None


def parse_config(text: str, *, source: str) -> XdplbConfig:
    """Validate configuration ``text``; ``source`` names it in errors and says the format (``*.json``: JSON)."""
    if len(text) > MAX_BYTES:
        raise ConfigError(source, [("", f"the text is longer than {MAX_BYTES >> 20} Mi characters")])
    if source.lower().endswith(".json"):
        data = _parse_json(text, source)
        node = _compose_quietly(text)
        duplicates = list(duplicate_keys(node, ())) if node is not None else []
        if duplicates:  # json.loads keeps the last of two equal keys, like YAML
            raise ConfigError(source, duplicates)
    else:
        data, node = _parse_yaml(text, source)
    return _validate(data, source=source, node=node)


def validate_config(data: object, *, source: str = "<data>") -> XdplbConfig:
    """Validate an already parsed document (dicts and lists), raising ConfigError rather than pydantic's error."""
    return _validate(data, source=source, node=None)


def format_path(loc: Loc) -> str:
    """``("services", 3, "backends", 1, "address")`` as ``services[3].backends[1].address``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _parse_yaml(text: str, source: str) -> tuple[object, yaml.Node | None]:
    try:
        node = _yaml.compose(text)
        if node is None:
            return None, None
        # Before constructing: that merges `<<:` keys into the node, where they would look like duplicates.
        duplicates = list(duplicate_keys(node, ()))
        if duplicates:
            raise ConfigError(source, duplicates)
        return _yaml.construct(node), node
    except yaml.MarkedYAMLError as error:
        raise ConfigError(source, [("", _yaml_message(error))]) from None
    except yaml.YAMLError as error:
        raise ConfigError(source, [("", f"bad YAML: {error}")]) from None


def _parse_json(text: str, source: str) -> object:
    try:
        data = json.loads(text, parse_int=_json_int, parse_constant=_json_constant)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        raise ConfigError(source, [("", f"{where}: bad JSON: {error.msg}")]) from None
    except ValueError as error:  # from the hooks below
        raise ConfigError(source, [("", f"bad JSON: {error}")]) from None
    except RecursionError:
        raise ConfigError(source, [("", f"bad JSON: nested more than {_yaml.MAX_DEPTH} levels deep")]) from None
    problem = _json_problem(data)
    if problem:
        raise ConfigError(source, [("", f"bad JSON: {problem}")])
    return data


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > _yaml.MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits (at most {_yaml.MAX_INT_DIGITS})")
    return int(text)


def _json_constant(text: str) -> float:
    raise ValueError(f"{text} is not a JSON number")


def _json_problem(data: object) -> str | None:
    """What YAML would have refused in parsed JSON: nesting deeper than YAML's bound, a lone surrogate (``"\\ud800"``:
    no character, and no encoding takes it). Without recursion."""
    pending: list[tuple[object, int]] = [(data, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                return f"{_shown(item)} holds a lone surrogate (\\ud800-\\udfff), which is not a character"
        elif isinstance(item, dict | list):
            if depth >= _yaml.MAX_DEPTH:
                return f"nested more than {_yaml.MAX_DEPTH} levels deep"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return None


def _yaml_message(error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark or error.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context = f" ({error.context})" if error.context else ""
    kind = "" if isinstance(error, _yaml.LimitError) else "bad YAML: "
    return f"{where}{kind}{error.problem}{context}"


def _compose_quietly(text: str) -> yaml.Node | None:
    """The YAML node tree of JSON text, for line numbers only; None if YAML reads it differently."""
    try:
        return _yaml.compose(text)
    except yaml.YAMLError:
        return None


def duplicate_keys(node: yaml.Node, loc: Loc, seen: set[int] | None = None) -> Iterator[tuple[str, str]]:
    """PyYAML keeps the last of two equal keys silently; here that is an error."""
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias already walked (and recursive documents)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value)
            if name in first and name != "<<":
                message = f"duplicate key {name!r} (line {key.start_mark.line + 1}; first at line {first[name]})"
                yield format_path(loc), message
            first.setdefault(name, key.start_mark.line + 1)
            yield from duplicate_keys(value, (*loc, name), seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from duplicate_keys(item, (*loc, index), seen)


def _validate(data: object, *, source: str, node: yaml.Node | None) -> XdplbConfig:
    if data is None:
        raise ConfigError(source, [("", "the document is empty: expected a mapping with at least `interfaces`")])
    if not isinstance(data, dict):
        raise ConfigError(source, [("", f"expected a mapping at the top of the document, got {_kind(data)}")])
    try:
        return XdplbConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(source, _problems(error, data, node)) from None


def _problems(error: ValidationError, data: object, node: yaml.Node | None) -> list[tuple[str, str]]:
    """The first ``MAX_PROBLEMS`` of ``error``, each at its path in the document, then how many more there are."""
    items = error.errors(include_url=False)
    locs = [tuple(item["loc"]) for item in items]
    enclosing = collections.Counter(loc[:end] for loc in locs for end in range(len(loc) + 1))
    problems: dict[tuple[str, str], None] = {}
    shown = 0
    for item, raw in zip(items, locs, strict=True):
        if item["type"] == "too_short" and enclosing[raw] > 1:
            continue  # "at least 1 item" because the only item was wrong: that one's error says it all
        shown += 1
        if shown > MAX_PROBLEMS:
            continue  # counted, not described: a list of a million wrong items should not take a gigabyte
        loc = _document_loc(raw, data)
        message = _message(item, disclose=_disclosure.discloses(loc))
        line = _line(node, loc) if node is not None else None
        problems[(format_path(loc), f"{message} (line {line})" if line else message)] = None
    if shown > MAX_PROBLEMS:
        problems[("", f"and {shown - MAX_PROBLEMS} more problems")] = None
    return list(problems)


def _kind(value: object) -> str:
    kinds = {list: "a list", dict: "a mapping", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
    return "nothing (null)" if value is None else kinds.get(type(value), type(value).__name__)


def _document_loc(loc: Loc, data: object) -> Loc:
    """Drop what pydantic adds to a location beyond the document: the tag of a discriminated union."""
    out: list[str | int] = []
    node: object = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif isinstance(node, dict) and node.get("type") == part:
            continue
        elif isinstance(part, int) and not isinstance(node, dict | list):
            continue  # a scalar the model wraps in a list, like `vip: ADDRESS`
        else:
            node = None
        out.append(part)
    return tuple(out)


def _line(node: yaml.Node | None, loc: Loc) -> int | None:
    """The line of the key (or list item) at ``loc``; of the innermost enclosing one when it is missing."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if str(k.value) == str(part)), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _message(error: Mapping[str, Any], *, disclose: bool) -> str:
    """The text of one pydantic error; it quotes the rejected value only when ``disclose`` (``config._disclosure``):
    the message reaches the API's status and the logs."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "xdplb_rule":
        return str(ctx["message"])
    if kind in ("value_error", "assertion_error"):
        return str(ctx["error"]) if disclose else _without_input(str(ctx["error"]), error.get("input"))
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        close = difflib.get_close_matches(key, _field_names(), n=1, cutoff=0.7)
        return "unknown key" + (f"; did you mean {close[0]!r}?" if close else "")
    if kind == "missing":
        return "required, but missing"
    if kind == "union_tag_invalid":
        key = str(ctx["discriminator"]).strip("'")
        return f"unknown {key} {ctx['tag']!r}: expected one of {ctx['expected_tags']}"
    if kind == "union_tag_not_found":
        return f"missing key {ctx['discriminator']}, which says what kind of check this is"
    value = error.get("input")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping, got {_kind(value)}"
    if kind in ("tuple_type", "list_type"):
        return f"expected a list, got {_kind(value)}"
    message = str(error["msg"])
    message = message[:1].lower() + message[1:]
    if isinstance(value, str | int | float | bool):
        message += f", got {_shown(value)}" if disclose else f", got {_kind(value)}"
    if isinstance(value, bool) and kind in ("literal_error", "enum", "string_type"):
        message += " (unquoted true and false are booleans: quote the word)"
    elif isinstance(value, str) and kind in _WANTED:
        message += f" ({_WANTED[kind]}, unquoted)"
    return message


_WANTED = {"int_type": "a whole number in decimal digits", "float_type": "a number", "bool_type": "true or false"}


def _shown(value: str | int | float | bool) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}... ({len(text)} characters)"


def _without_input(message: str, value: object) -> str:
    """``message`` with every quoted string of the rejected ``value`` (and its keys) replaced by ``<redacted>``."""
    pending, texts = [value], set()
    while pending:
        item = pending.pop()
        if isinstance(item, str) and item:
            texts.add(item)
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    for text in sorted(texts, key=len, reverse=True):
        message = message.replace(repr(text), _disclosure.REDACTED)
    return message


@functools.cache
def _field_names() -> tuple[str, ...]:
    names: set[str] = set()
    pending: list[type[BaseModel]] = [XdplbConfig]
    done: set[type[BaseModel]] = set()
    while pending:
        model = pending.pop()
        if model in done:
            continue
        done.add(model)
        for name, field in model.model_fields.items():
            names.add(name)
            pending.extend(_models_in(field.annotation))
    return tuple(sorted(names | {"vip"}))


def _models_in(annotation: object) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for argument in getattr(annotation, "__args__", ()):
        yield from _models_in(argument)
    origin = getattr(annotation, "__origin__", None)
    if origin is not None and getattr(annotation, "__metadata__", None) is not None:
        yield from _models_in(origin)
