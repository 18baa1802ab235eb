"""Errors of the BGP driver."""

from collections.abc import Sequence

from config import XdplbError

__all__ = [
    "AttributeMismatchError",
    "BgpError",
    "CommandError",
    "ExabgpTimeoutError",
    "ReconfigureError",
    "SpeakerStateError",
]


class BgpError(XdplbError):
    """Base class of every error the BGP driver raises."""


class CommandError(BgpError):
    """ExaBGP answered ``error`` to a command; the announced set is left as it was before the call."""

    def __init__(self, command: str) -> None:
        super().__init__(f"exabgp rejected command {command!r}")
        self.command = command


class ExabgpTimeoutError(BgpError, TimeoutError):
    """ExaBGP stopped acknowledging commands (hung); the driver restarts it and replays. Retrying makes sense."""

    def __init__(self, command: str, timeout: float) -> None:
        super().__init__(f"exabgp acknowledged nothing for {timeout:g}s while {command[:200]!r} waited; restarting it")
        self.command = command
        self.timeout = timeout


class SpeakerStateError(BgpError, RuntimeError):
    """A call made in the wrong lifecycle state, such as ``announce`` before ``start``."""


class AttributeMismatchError(BgpError, ValueError):
    """Route attributes that cannot go with the prefix, such as an IPv4 next-hop for an IPv6 prefix."""


class ReconfigureError(BgpError):
    """``Speaker.reconfigure`` refused or could not apply a new config; the old one is still in force, its sessions
    untouched. ``problems`` lists (path within the ``bgp`` section, message) when the config itself is refused."""

    def __init__(self, message: str, problems: Sequence[tuple[tuple[str | int, ...], str]] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)
