"""How every xdplb process writes its log on stderr: one event per line, logfmt (the default) or JSON.

Messages are written ``log.info("event=reload_applied config=%s changes=%s", path, text)``: each ``%`` field is a
value. The formatter renders each value alone and quotes it when it must (spaces, quotes, ``=``, nothing at all,
anything unprintable), so a reason like ``http :80/: status 503`` stays one value; a traceback is folded into one
``traceback`` field. A message from another library (not ``event=...``) becomes ``event=log message="..."``::

    time=2026-12-02T08:10:00.123Z level=info logger=balancer.daemon event=backend_health backend=web/198.18.0.11 \
from=up to=down reason="http :80/: status 503, expected 200-299"

``json`` writes the same fields as one JSON object per line. The format is chosen once per process
(``configure_logging``), and passed on to child processes in the environment (``XDPLB_LOG_FORMAT``).
"""

import json
import logging
import os
import re
import sys
import time
from typing import Any

__all__ = ["LOG_FORMATS", "EventFormatter", "configure_logging", "logfmt_fields", "logfmt_value"]

LOG_FORMATS = ("logfmt", "json")
_ENVIRONMENT = "XDPLB_LOG_FORMAT"
_BARE = re.compile(r'[^\s"=\\]+')
_SPEC = re.compile(r"%[#0 +-]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa%]")
_FIELD = re.compile(r'([^\s="]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)')


def logfmt_value(value: object) -> str:
    """``value`` as a logfmt value: bare when it can be, else a double-quoted JSON string."""
    text = value if isinstance(value, str) else str(value)
    if _BARE.fullmatch(text) and text.isprintable():
        return text
    return json.dumps(text, ensure_ascii=False)


def logfmt_fields(line: str) -> dict[str, str]:
    """The ``key=value`` fields of a logfmt line, values unquoted (a later key wins)."""
    return {key: json.loads(value) if value.startswith('"') else value for key, value in _FIELD.findall(line)}


class EventFormatter(logging.Formatter):
    """Formats records as logfmt (``fmt="logfmt"``) or JSON lines, with ``static`` fields after the logger's
    name (``{"worker": "0"}`` in a checker process)."""

    def __init__(self, fmt: str = "logfmt", static: dict[str, str] | None = None) -> None:
        super().__init__()
        if fmt not in LOG_FORMATS:
            raise ValueError(f"log format {fmt!r}: expected one of {', '.join(LOG_FORMATS)}")
        self.fmt = fmt
        self.static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        head = {"time": stamp, "level": record.levelname.lower(), "logger": record.name, **self.static}
        body = _body(record)
        problem = ""
        if record.exc_info:
            problem = self.formatException(record.exc_info)
        if record.stack_info:
            problem = f"{problem}\n{self.formatStack(record.stack_info)}".strip()
        if self.fmt == "json":
            document: dict[str, Any] = {**head, **logfmt_fields(body)}
            if problem:
                document["traceback"] = problem
            return json.dumps(document, ensure_ascii=False)
        line = " ".join(f"{key}={logfmt_value(value)}" for key, value in head.items()) + " " + body
        return f"{line} traceback={logfmt_value(problem)}" if problem else line


def _body(record: logging.LogRecord) -> str:
    """The message with each ``%`` field rendered alone and quoted; ``event=log message=...`` for free text."""
    template = str(record.msg)
    args = record.args
    if not template.startswith("event="):
        return f"event=log message={logfmt_value(_message(record))}"
    if not args:
        return template
    values = iter(args if isinstance(args, tuple) else (args,))
    try:
        return _SPEC.sub(lambda spec: "%" if spec[0] == "%%" else logfmt_value(spec[0] % next(values)), template)
    except (TypeError, ValueError, KeyError, StopIteration):  # fields that do not match the arguments
        return f"event=log message={logfmt_value(_message(record))}"


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except (TypeError, ValueError, KeyError):
        return f"{record.msg} {record.args!r}"


def configure_logging(level: str, fmt: str | None = None, **static: str) -> None:
    """Log records at ``level`` and above to stderr in ``fmt`` (None: the parent's, from the environment, else
    logfmt), and hand the format to child processes."""
    chosen = fmt or os.environ.get(_ENVIRONMENT) or "logfmt"
    formatter = EventFormatter(chosen, static)
    os.environ[_ENVIRONMENT] = chosen
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[handler], force=True)
