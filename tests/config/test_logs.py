"""The log line format: logfmt with every value quoted as it must be, or JSON; one line per event."""

import json
import logging
import os
import subprocess
import sys

import pytest

import config


def record(msg: str, *args: object, level: int = logging.INFO, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("balancer.daemon", level, __file__, 1, msg, args or None, exc_info)


@pytest.mark.parametrize(("value", "written"), [
    ("web/198.18.0.11", "web/198.18.0.11"),
    ("http :80/: status 503, expected 200-299", '"http :80/: status 503, expected 200-299"'),
    ("", '""'), ('say "hi"', '"say \\"hi\\""'), ("a=b", '"a=b"'), ("back\\slash", '"back\\\\slash"'),
    ("two\nlines", '"two\\nlines"'), ("tab\there", '"tab\\there"'), ("caf\u00e9", "caf\u00e9"), (3, "3"),
])  # fmt: skip
def test_values_are_bare_or_quoted(value: object, written: str) -> None:
    assert config.logfmt_value(value) == written
    assert config.logfmt_fields(f"k={written}") == {"k": str(value)}


def test_a_line_is_time_level_logger_then_the_event_with_each_value_quoted_alone() -> None:
    formatter = config.EventFormatter()
    line = formatter.format(
        record(
            "event=backend_health backend=%s to=%s reason=%s took=%.3f error=%r",
            "web/198.18.0.11",
            "down",
            "http :80/: status 503",
            0.25,
            OSError("a b"),
        )
    )
    head, _, body = line.partition(" level=")
    assert head.startswith("time=") and head.endswith("Z") and "T" in head
    assert body.startswith("info logger=balancer.daemon event=backend_health ")
    assert config.logfmt_fields(line) | {"time": "-"} == {
        "time": "-",
        "level": "info",
        "logger": "balancer.daemon",
        "event": "backend_health",
        "backend": "web/198.18.0.11",
        "to": "down",
        "reason": "http :80/: status 503",
        "took": "0.250",
        "error": "OSError('a b')",
    }


def test_a_traceback_is_folded_into_one_field() -> None:
    line = config.EventFormatter().format(record("event=reload_failed config=%s", "/x.yaml", exc=True))
    assert "\n" not in line
    fields = config.logfmt_fields(line)
    assert fields["event"] == "reload_failed" and fields["traceback"].startswith("Traceback (most recent call last)")
    assert fields["traceback"].endswith("ValueError: bad\nthing")


def test_free_text_from_other_libraries_becomes_an_event_log_message() -> None:
    formatter = config.EventFormatter()
    fields = config.logfmt_fields(formatter.format(record("Task exception was never retrieved: %s", "x y")))
    assert fields["event"] == "log" and fields["message"] == "Task exception was never retrieved: x y"
    mismatched = config.logfmt_fields(formatter.format(record("event=x a=%s b=%s", "only one")))
    assert mismatched["event"] == "log" and "only one" in mismatched["message"]
    assert config.logfmt_fields(formatter.format(record("event=x pct=%d%%", 5)))["pct"] == "5%"


def test_json_lines_hold_the_same_fields() -> None:
    formatter = config.EventFormatter("json", {"worker": "1"})
    line = formatter.format(record("event=backend_health reason=%s", "status 503", level=logging.WARNING, exc=True))
    document = json.loads(line)
    assert document["level"] == "warning" and document["worker"] == "1" and document["reason"] == "status 503"
    assert document["event"] == "backend_health" and "ValueError: bad" in document["traceback"]
    with pytest.raises(ValueError, match="log format"):
        config.EventFormatter("xml")


def test_a_child_process_logs_in_the_format_its_parent_chose() -> None:
    child = "import config, logging; config.configure_logging('INFO', worker='0'); logging.getLogger('c').info('event=up a=%s', 'x y')"
    for fmt, check in (("json", lambda line: json.loads(line)["a"] == "x y"),
                       ("logfmt", lambda line: config.logfmt_fields(line)["a"] == "x y")):  # fmt: skip
        environment = {**os.environ, "XDPLB_LOG_FORMAT": fmt}
        done = subprocess.run(
            [sys.executable, "-c", child], env=environment, capture_output=True, text=True, timeout=60, check=True
        )
        line = done.stderr.strip()
        assert check(line) and "worker" in line, line
