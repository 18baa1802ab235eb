"""Turning what went wrong in a check into a short reason an operator can act on."""

import errno
import ssl
from collections.abc import Callable

__all__ = ["Start", "Verdict", "describe_error", "one_line"]

Verdict = tuple[bool, str]
"""What a checker's ``run()`` returns: (passed, reason)."""

Start = Callable[[Callable[[Verdict], None]], Callable[[], None]]
"""A checker's ``start(done)``: begins one check, calls ``done`` with its verdict later, returns how to abandon it."""

_ERRNO_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EPIPE: "connection reset",
    errno.ECONNABORTED: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.EADDRNOTAVAIL: "address not available",
    errno.EMFILE: "out of file descriptors",
}


def describe_error(error: BaseException, *, timeout: float, phase: str) -> str:
    """A reason for ``error``, raised while the check was ``phase`` (``"connecting"``, ``"reading the reply"``).

    >>> describe_error(TimeoutError(), timeout=1.0, phase="connecting")
    'timeout after 1s connecting'
    >>> describe_error(ConnectionRefusedError(111, "Connection refused"), timeout=1.0, phase="connecting")
    'connection refused'
    """
    if isinstance(error, TimeoutError):
        return f"timeout after {timeout:g}s {phase}"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS error: {error.verify_message or error.reason or error}"
    if isinstance(error, ssl.SSLError):
        return f"TLS error: {error.reason or error}"
    if isinstance(error, OSError):
        if error.errno in _ERRNO_REASONS:
            return _ERRNO_REASONS[error.errno]
        if isinstance(error, ConnectionResetError):
            return "connection reset"
        if isinstance(error, ConnectionError):
            return f"connection closed {phase}"
        return f"{error.strerror or error} {phase}".strip()
    return f"{type(error).__name__}: {error}"


def one_line(text: str, limit: int = 160) -> str:
    """``text`` with runs of whitespace (newlines too) collapsed, cut to ``limit`` characters, for a reason."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
