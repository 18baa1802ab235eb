"""The Prometheus text format (0.0.4) and OpenMetrics (1.0.0), written from families of ready-made sample lines.

prometheus_client's encoders check and escape every label name of every sample, which costs about 20 µs a
sample: 3.5 s of CPU for the 176,000 series of 10,000 backends, every scrape. Here each sample is one f-string:
label names are sorted once per family shape (``Labels``), a label set is rendered once per series and reused by
the families that share it, and values 0 and 1 skip the float formatting. The output is byte for byte what
prometheus_client writes for the same samples (``tests/api/test_metrics_text.py`` re-encodes ours with it)::

    >>> family = Family("xdplb_vip_announced", "gauge", "1 while the VIP's route is announced over BGP.")
    >>> family.add("", Labels(["vip"]).render(["192.0.2.100"]), 1)
    >>> print(text([family]).decode(), end="")
    # HELP xdplb_vip_announced 1 while the VIP's route is announced over BGP.
    # TYPE xdplb_vip_announced gauge
    xdplb_vip_announced{vip="192.0.2.100"} 1.0
"""

import bisect
import dataclasses
import itertools
from collections.abc import Iterable, Sequence

from prometheus_client.utils import floatToGoString

__all__ = ["Family", "Labels", "label", "openmetrics", "text", "value"]


def _escape(label_value: str) -> str:
    if "\\" in label_value or '"' in label_value or "\n" in label_value:
        return label_value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return label_value


def label(name: str, label_value: str) -> str:
    """One label, ``name="value"`` with the value escaped: the ``extra`` of ``Labels.join``."""
    return f'{name}="{_escape(label_value)}"'


def value(number: float) -> str:
    """A sample value as prometheus_client writes it (Go's float formatting): ``1.0``, ``1.79e+09``, ``+Inf``."""
    if number == 0:
        return "0.0"
    if number == 1:
        return "1.0"
    if -1e16 < number < 1e6:  # repr and Go agree here (and NaN, infinities fail the test)
        return repr(float(number))
    formatted: str = floatToGoString(number)  # type: ignore[no-untyped-call]
    return formatted


class Labels:
    """Label sets with these names, rendered in prometheus_client's order (sorted by name) with escaped values.

    ``pieces(values)`` renders each label once; ``join(pieces)`` and ``join(pieces, extra=...)`` make the label
    sets of the series that share them (``backend_health{..., state="up"}``) without sorting again.
    """

    def __init__(self, names: Sequence[str], *, extra: str | None = None) -> None:
        self._order = sorted(range(len(names)), key=lambda i: names[i])
        self._names = [names[i] for i in self._order]
        self._extra_at = bisect.bisect(self._names, extra) if extra is not None else len(names)

    def pieces(self, values: Sequence[str]) -> list[str]:
        """``name="value"`` for each label, in output order."""
        return [f'{name}="{_escape(values[i])}"' for name, i in zip(self._names, self._order)]

    def join(self, pieces: Sequence[str], extra: str | None = None) -> str:
        """``{...}`` of ``pieces``, with the ``extra`` label's ``name="value"`` (already escaped) in its place."""
        if extra is None:
            return "{" + ",".join(pieces) + "}" if pieces else ""
        at = self._extra_at
        return "{" + ",".join(itertools.chain(pieces[:at], (extra,), pieces[at:])) + "}"

    def render(self, values: Sequence[str]) -> str:
        """``{...}`` for these values (``""`` when there are no labels)."""
        return self.join(self.pieces(values))


@dataclasses.dataclass(slots=True)
class Family:
    """A metric family: ``type`` counter, gauge or histogram; counters are named without ``_total``."""

    name: str
    type: str
    help: str
    lines: list[str] = dataclasses.field(default_factory=list)

    def add(self, suffix: str, labels: str, number: float) -> None:
        """One sample: ``<name><suffix><labels> <value>`` (``suffix`` ``_total`` for counters)."""
        self.lines.append(f"{self.name}{suffix}{labels} {value(number)}\n")

    def add_histogram(
        self, labels: Labels, pieces: Sequence[str], bounds: Sequence[float], cumulative: Sequence[int], total: float
    ) -> None:
        """The buckets (``le`` from ``bounds`` then ``+Inf``; ``labels`` made with ``extra="le"``), _count, _sum."""
        name = self.name
        for bound, count in zip([*map(str, bounds), "+Inf"], cumulative):
            le = 'le="' + bound + '"'
            self.lines.append(f"{name}_bucket{labels.join(pieces, le)} {value(count)}\n")
        rendered = labels.join(pieces)
        self.lines.append(f"{name}_count{rendered} {value(cumulative[-1])}\n")
        self.lines.append(f"{name}_sum{rendered} {value(total)}\n")


def text(families: Iterable[Family]) -> bytes:
    """The text format 0.0.4, as ``prometheus_client.generate_latest``."""
    out: list[str] = []
    for family in families:
        name = family.name + "_total" if family.type == "counter" else family.name
        documentation = family.help.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {documentation}\n")
        out.append(f"# TYPE {name} {family.type}\n")
        out.extend(family.lines)
    return "".join(out).encode()


def openmetrics(families: Iterable[Family]) -> bytes:
    """OpenMetrics 1.0.0, as ``prometheus_client.openmetrics.exposition.generate_latest``."""
    out: list[str] = []
    for family in families:
        out.append(f"# HELP {family.name} {_escape(family.help)}\n")
        out.append(f"# TYPE {family.name} {family.type}\n")
        out.extend(family.lines)
    out.append("# EOF\n")
    return "".join(out).encode()
