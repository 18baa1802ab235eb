"""Reading a configuration again at a cost in proportion to what changed since the last read: what a reload uses.

A block-style YAML document is cut into pieces along its lines: one per top-level key, and one per item of a
block sequence under ``services:``. A piece whose text was in the last document keeps what was made of it (its
data, and for a service its validated ``ServiceConfig``); only new pieces are parsed and validated, each alone with
the same bounds, and then the whole document's rules run as always.

The result is what ``parse_config`` gives for the same text, or the full reading is done instead: whenever the
text is not plainly cut (JSON, document markers or directives, a line at the margin that is not a plain key, other
line breaks than ``\\n``, a repeated top-level key), and whenever a piece fails to read or validate alone (an alias of
an anchor in another piece, a quoted scalar over a cut, any mistake). Mistakes are always reported by the full
reading, with their lines.
"""

import re
from dataclasses import dataclass
from typing import Any


from config import _loader, _yaml
from config._root import XdplbConfig
from config._service import ServiceConfig

__all__ = ["IncrementalLoader"]

_KEY_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*):(?:[ \t]|$)")
_BARE_SERVICES = re.compile(r"services:[ \t]*(?:#.*)?")


@dataclass(frozen=True)
class _Piece:
    data: Any  # {key: value} for a top-level piece, [item] for a service
    nodes: int  # as _yaml counts them, the piece's own wrapping collection included


@dataclass
class _Cut:
    sections: list[tuple[str, str]]  # (key, text) for each top-level key but a cut `services`
    items: list[str] | None  # the text of each item under a bare `services:`, None when not cut


def _cut(text: str) -> _Cut | None:
    """The pieces of ``text``, exact slices of it, or None when it is not plainly cut (the full reading decides)."""
    lines = text.split("\n")
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    offsets[-1] = len(text)  # the last line has no "\n"
    starts: list[tuple[int, str]] = []  # (line number, key) of each top-level key
    for number, line in enumerate(lines):
        if not line or line[0] in " #" or line.startswith("- ") or line == "-":
            continue
        match = _KEY_LINE.match(line)
        if match is None:
            return None
        starts.append((number, match.group(1)))
    keys = [key for _, key in starts]
    if not starts or len(set(keys)) != len(keys):
        return None
    # What comes before the first key (comments, or a mistake) is read with it, as the start of the first piece.
    cut = _Cut([], None)
    ends = [number for number, _ in starts[1:]] + [len(lines)]
    for index, ((first, key), end) in enumerate(zip(starts, ends, strict=True)):
        items = _items(lines, first, end) if key == "services" and _BARE_SERVICES.fullmatch(lines[first]) else None
        if items is None:
            cut.sections.append((key, text[offsets[0 if index == 0 else first] : offsets[end]]))
        else:
            cut.items = [text[offsets[begin] : offsets[until]] for begin, until in items]
    return cut


def _items(lines: list[str], first: int, end: int) -> list[tuple[int, int]] | None:
    """The line ranges of the items of the bare ``services:`` at ``lines[first]``, the section ending before
    ``lines[end]``; None if it has none, or something else comes before the first. A line that breaks the sequence
    is left in its item: the item then fails to read alone, as the whole document would."""
    indent: int | None = None
    begins: list[int] = []
    for number in range(first + 1, end):
        line = lines[number]
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        depth = len(line) - len(stripped)
        if indent is None:
            indent = depth
        if depth == indent and (stripped.startswith("- ") or stripped == "-"):
            begins.append(number)
        elif not begins:
            return None
    return list(zip(begins, [*begins[1:], end], strict=True)) if begins else None


class IncrementalLoader:
    """Reads one configuration file again and again, each time with the work that its changes need.

    ``load`` gives what ``config.load_config`` gives (the same configuration, or the same ``ConfigError``); it
    remembers the pieces of the last document it read, and of no other.
    """

    def __init__(self) -> None:
        self._pieces: dict[str, _Piece] = {}
        self._services: dict[str, ServiceConfig] = {}

    def load(self, path: str) -> XdplbConfig:
        """Read and validate the file at ``path``, as ``config.load_config`` does."""
        return self.parse(_loader.read_text(path), source=path)

    def parse(self, text: str, *, source: str) -> XdplbConfig:
        """Validate ``text``, as ``config.parse_config`` does."""
        cut = None if source.lower().endswith(".json") or len(text) > _loader.MAX_BYTES else _cut(text)
        if cut is not None:
            try:
                return self._assemble(cut)
            except Exception:  # whatever a piece does alone, the full reading has the last word
                pass
        self._pieces, self._services = {}, {}
        return _loader.parse_config(text, source=source)

    def _assemble(self, cut: _Cut) -> XdplbConfig:
        pieces: dict[str, _Piece] = {}
        services: dict[str, ServiceConfig] = {}
        data: dict[str, Any] = {}
        total = 1  # the root mapping
        for key, text in cut.sections:
            piece = pieces[text] = self._pieces.get(text) or _read(text, _yaml.MAX_DEPTH)
            if not isinstance(piece.data, dict) or list(piece.data) != [key]:  # YAML saw other line breaks
                raise _NotPlain
            data[key] = piece.data[key]
            total += piece.nodes - 1
        if cut.items is not None:
            total += 2  # the `services` key and its sequence
            models: list[Any] = []
            for text in cut.items:
                service = self._services.get(text)
                if service is None:
                    piece = pieces[text] = self._pieces.get(text) or _read(text, _yaml.MAX_DEPTH - 1)
                    if not isinstance(piece.data, list) or len(piece.data) != 1:  # as above
                        raise _NotPlain
                    service = ServiceConfig.model_validate(piece.data[0])
                else:
                    piece = pieces[text] = self._pieces[text]
                services[text] = service
                models.append(service)
                total += piece.nodes - 1
            data["services"] = models
        if total > _yaml.MAX_NODES:
            raise _NotPlain
        loaded = XdplbConfig.model_validate(data)
        self._pieces, self._services = pieces, services
        return loaded


class _NotPlain(Exception):
    """A piece that does not read as its place says, or pieces over a bound together: read the whole text."""


def _read(text: str, max_depth: int) -> _Piece:
    node, size = _yaml.compose_counted(text, max_depth=max_depth)
    if node is None:
        raise _NotPlain
    if any(True for _ in _loader.duplicate_keys(node, ())):
        raise _NotPlain
    return _Piece(_yaml.construct(node), size)
