"""The root of xdplb's exception hierarchy, and the error a bad configuration raises.

``XdplbError`` lives in ``config``, the lowest layer, so that every package can derive its own errors from it.
"""

from collections.abc import Iterable

__all__ = ["ConfigError", "XdplbError"]


class XdplbError(Exception):
    """Base class of every error xdplb raises on purpose."""


class ConfigError(XdplbError, ValueError):
    """A configuration that cannot be read or is not valid; one ``(path, message)`` problem per mistake found.

    ``path`` is where in the document the mistake is (``services[3].backends[1].address``), empty when it is about
    the file as a whole. ``str()`` gives one line per problem::

        demo.yaml: services[0].backends[1].address: not an IP address: '198.18.0.x' (line 14)
    """

    def __init__(self, source: str, problems: Iterable[tuple[str, str]]) -> None:
        self.source = source
        self.problems: tuple[tuple[str, str], ...] = tuple(problems)
        super().__init__(self._render())

    def __reduce__(self) -> tuple[type["ConfigError"], tuple[str, tuple[tuple[str, str], ...]]]:
        return (type(self), (self.source, self.problems))

    def _render(self) -> str:
        lines = []
        for path, message in self.problems:
            lines.append(f"{self.source}: {path}: {message}" if path else f"{self.source}: {message}")
        return "\n".join(lines)
