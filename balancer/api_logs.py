"""The API server's own logs, bounded: a client sending garbage must not flood the journal.

aiohttp logs every malformed request with its traceback (about 20 lines), and one client produced about 8,000
log lines a second. ``ServerLog`` (aiohttp's server logger) turns a malformed request into one line without a
traceback, and ``AccessLog`` wraps the access log. Both pass each kind of line through a ``TokenBucket``
(``burst`` lines at once, then ``rate`` a second); when a kind may log again, one line first says how many were
suppressed::

    event=api_log_suppressed kind=bad_request suppressed=7981

Kinds: ``bad_request`` (the request could not be parsed), ``error`` (any other line of the server logger, an
unhandled exception keeps its traceback), ``access_4xx`` and ``access_5xx``; access lines with other statuses are
never suppressed.
"""

import logging
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from aiohttp import http

__all__ = ["AccessLog", "ServerLog", "TokenBucket"]

log = logging.getLogger(__name__)

_RATE = 2.0
_BURST = 20


class TokenBucket:
    """``burst`` events at once, refilled at ``rate`` a second; ``suppressed`` counts the events refused since
    the last one allowed."""

    def __init__(
        self, *, rate: float = _RATE, burst: int = _BURST, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._at = clock()
        self.suppressed = 0

    def take(self) -> bool:
        """Whether one more event may pass now (then it used a token), else count it as suppressed."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.suppressed += 1
        return False


class _Limited(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter that lets each kind of line through its own bucket."""

    def __init__(self, logger: logging.Logger, *, rate: float, burst: int, clock: Callable[[], float]) -> None:
        super().__init__(logger, {})
        self._buckets: dict[str, TokenBucket] = {}
        self._rate, self._burst, self._clock = rate, burst, clock

    def _allow(self, kind: str) -> bool:
        bucket = self._buckets.get(kind)
        if bucket is None:
            bucket = self._buckets[kind] = TokenBucket(rate=self._rate, burst=self._burst, clock=self._clock)
        if not bucket.take():
            return False
        if bucket.suppressed:
            log.warning("event=api_log_suppressed kind=%s suppressed=%d", kind, bucket.suppressed)
            bucket.suppressed = 0
        return True

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs


class ServerLog(_Limited):
    """aiohttp's server logger (``RequestHandler(logger=...)``): malformed requests as one line, rate-limited.

    ``on_bad_request`` is called for every malformed request, logged or not (for a metric).
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        on_bad_request: Callable[[], None] = lambda: None,
        rate: float = _RATE,
        burst: int = _BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(logger, rate=rate, burst=burst, clock=clock)
        self._on_bad_request = on_bad_request

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        if isinstance(exc_info, http.HttpProcessingError):
            self._on_bad_request()
            if self.isEnabledFor(level) and self._allow("bad_request"):
                remote = args[0] if args else None  # aiohttp: "Error handling request from %s", remote
                error = " ".join(str(exc_info.message or exc_info).split())[:200]
                self.logger.log(
                    level, "event=api_bad_request remote=%s status=%s error=%s", remote, exc_info.code, error
                )
            return
        if self.isEnabledFor(level) and (level < logging.WARNING or self._allow("error")):
            self.logger.log(level, msg, *args, **kwargs)


class AccessLog(_Limited):
    """The access logger (``AppRunner(access_log=...)``): lines of 4xx and 5xx answers are rate-limited."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        rate: float = _RATE,
        burst: int = _BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(logger, rate=rate, burst=burst, clock=clock)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        status = (kwargs.get("extra") or {}).get("response_status")
        if isinstance(status, int) and status >= 400 and not self._allow(f"access_{status // 100}xx"):
            return
        self.logger.log(level, msg, *args, **kwargs)
