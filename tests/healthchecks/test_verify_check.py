"""``healthchecks.verify_check``: a check that cannot be sent is a HealthCheckConfigError naming its field.

On main a non-Latin-1 path escaped as UnicodeEncodeError and a missing CA file as FileNotFoundError, both from
``Scheduler.update`` (the reload's HTTP 500).
"""

import ipaddress
from pathlib import Path

import pytest

import config
import healthchecks

ADDRESS = ipaddress.ip_address("198.18.0.11")


def http(**fields: object) -> config.HttpCheck:
    return config.HttpCheck.model_validate({"type": "http"} | fields)


@pytest.mark.parametrize(
    ("check", "field", "message"),
    [
        (http(path="/caf\u00e9"), None, None),  # Latin-1: sent as is
        (http(path="/\u2603"), "path", "path '/\u2603': only Latin-1 characters can be sent"),
        (
            http(host="b\u00fccher.\u4f8b"),
            "host",
            "only Latin-1 characters can be sent (write a name in its xn-- form)",
        ),
        (http(headers={"X-Name": "\u2603"}), "headers", "header 'X-Name': only Latin-1 characters can be sent"),
        (
            http(type="https", ca_file="/nonexistent/ca.pem"),
            "ca_file",
            "ca_file '/nonexistent/ca.pem': cannot load: No such file or directory",
        ),
        (http(type="https", ca_file="/nonexistent/ca.pem", tls_verify=False), None, None),  # not read
        (config.TcpCheck(send="\\U0001F600"), "send", "tcp check send: bad escape or a character beyond \\xff"),
        (config.TcpCheck(expect="\\x"), "expect", "tcp check expect: bad escape"),
        (config.DnsCheck(name="a..b"), "name", "dns check:"),
        (
            config.HttpCheck.model_construct(expect_body_regex="\\N{DIGIT ONE}"),
            "expect_body_regex",
            "expect_body_regex: cannot match bytes: bad escape",
        ),
    ],
    ids=[
        "latin-1 path",
        "path",
        "host",
        "header",
        "missing ca_file",
        "ca_file unused",
        "send",
        "expect",
        "dns name",
        "regex",
    ],
)
def test_verify_check(check: config.Check, field: str | None, message: str | None) -> None:
    if message is None:
        healthchecks.verify_check(check, ADDRESS, 80)
        return
    with pytest.raises(healthchecks.HealthCheckConfigError) as caught:
        healthchecks.verify_check(check, ADDRESS, 80)
    assert caught.value.field == field
    assert message in str(caught.value)


def test_a_ca_file_that_is_not_pem(tmp_path: Path) -> None:
    path = tmp_path / "ca.pem"
    path.write_text("not a certificate\n")
    with pytest.raises(healthchecks.HealthCheckConfigError, match="cannot load: .*NO_CERTIFICATE_OR_CRL_FOUND"):
        healthchecks.verify_check(http(type="https", ca_file=str(path)), ADDRESS, 443)


def test_the_scheduler_refuses_the_same_way_before_changing_anything() -> None:
    scheduler = healthchecks.Scheduler()
    target = healthchecks.Target(key="web/198.18.0.11", address=ADDRESS, port=80, checks=(http(path="/\u2603"),))
    with pytest.raises(healthchecks.HealthCheckConfigError, match="only Latin-1"):
        scheduler.update([target])
    assert scheduler.states() == {}
