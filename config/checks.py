"""Health-check parameters: what to probe, how often, and how many results flip the state."""

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from config import _types
from config._base import XdplbModel

__all__ = ["Check", "CheckTiming", "DnsCheck", "HttpCheck", "TcpCheck", "parse_status_codes"]

Seconds = Annotated[float, Field(gt=0, le=3600, strict=True)]


def parse_status_codes(text: str) -> tuple[tuple[int, int], ...]:
    """The inclusive (low, high) ranges named by ``"200-299,301"``; ValueError says which item is wrong."""
    out = []
    for item in text.split(","):
        match = _STATUS_ITEM.match(item)
        if match is None:
            raise ValueError(f"bad status code item {item.strip()!r}: expected NNN or NNN-NNN")
        low, high = int(match[1]), int(match[2] or match[1])
        if high < low:
            raise ValueError(f"bad status code range {item.strip()!r}: high end below low end")
        out.append((low, high))
    return tuple(out)


_UNSAFE = re.compile(r"[\s\x00]")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_STATUS_ITEM = re.compile(r"^\s*([1-5]\d\d)\s*(?:-\s*([1-5]\d\d)\s*)?$")


class CheckTiming(XdplbModel):
    """When a check runs and how many results in a row change a backend's state (HAProxy's inter/fastinter/downinter)."""

    interval: Seconds = Field(2.0, description="seconds between checks while the state is steady")
    timeout: Seconds = Field(1.0, description="seconds one check may take, connect to verdict")
    rise: int = Field(2, ge=1, le=100, strict=True, description="consecutive passes that bring a backend up")
    fall: int = Field(3, ge=1, le=100, strict=True, description="consecutive failures that bring a backend down")
    fast_interval: Seconds | None = Field(
        None, description="interval while the state is changing (some results disagree with it); default: interval"
    )
    down_interval: Seconds | None = Field(None, description="interval while down; default: interval")
    jitter: float = Field(
        1.0,
        ge=0,
        le=1,
        strict=True,
        description="random start offset as a fraction of the interval, so checks do not fire together",
    )

    @model_validator(mode="after")
    def _timeout_fits(self) -> "CheckTiming":
        for name in ("interval", "fast_interval", "down_interval"):
            every = getattr(self, name)
            if every is not None and self.timeout > every:
                raise ValueError(f"timeout {self.timeout}s is longer than {name} {every}s")
        return self


class _CheckBase(XdplbModel):
    port: _types.Port | None = Field(
        None, description="port to probe; default: the service's port (side-car health port)"
    )
    timing: CheckTiming = Field(
        default_factory=CheckTiming, description="how often the check runs and what flips the state"
    )
    via: Literal["direct", "dataplane"] = Field(
        "direct",
        description="direct: to the backend's own address; dataplane: to the VIP, delivered to this backend as the data "
        "plane forwards (MAC rewrite or tunnel), so a backend that does not answer as the VIP is down",
    )


class HttpCheck(_CheckBase):
    """An HTTP or HTTPS request whose status (and optionally body) must match."""

    type: Literal["http", "https"] = "http"
    method: Literal["GET", "HEAD"] = Field("GET", description="request method")
    path: str = Field("/", pattern=r"^/", description="request path, with the query string if any")
    host: str | None = Field(None, description="Host header; default: the backend address")
    sni: str | None = Field(None, description="TLS server name; default: host")
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")
    expect_status: str = Field("200-299", description='expected status codes, lists and ranges: "200-299,301"')
    expect_body: str | None = Field(None, description="substring the body must contain")
    expect_body_regex: str | None = Field(None, description="regular expression the body must match")
    tls_verify: bool = Field(True, strict=True, description="https: verify the certificate chain and name")
    ca_file: str | None = Field(None, description="https: CA bundle to verify against; default: the system's")
    keepalive: bool = Field(
        False,
        strict=True,
        description="reuse the connection between checks: about half the CPU at scale, but it "
        "does not prove that the service accepts new connections",
    )
    max_body_bytes: int = Field(65536, ge=0, strict=True, description="read at most this much body")

    @field_validator("path", "host", "sni")
    @classmethod
    def _no_request_injection(cls, value: str | None) -> str | None:
        if value is not None and _UNSAFE.search(value):
            raise ValueError(f"{value!r}: no spaces, CR, LF or NUL (percent-encode them in a path)")
        return value

    @field_validator("headers")
    @classmethod
    def _header_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _TOKEN.match(name):
                raise ValueError(f"bad header name {name!r}: letters, digits and !#$%&'*+-.^_`|~ only")
            if "\r" in text or "\n" in text or "\0" in text:
                raise ValueError(f"header {name}: the value may not contain CR, LF or NUL")
        return value

    @field_validator("expect_status", mode="before")
    @classmethod
    def _codes(cls, value: object) -> str:
        text = str(value) if isinstance(value, int) else value
        if not isinstance(text, str):
            raise ValueError("expected a string such as '200-299,301'")
        parse_status_codes(text)
        return text

    def accepts_status(self, code: int) -> bool:
        """Whether ``code`` is one of the expected status codes."""
        return any(low <= code <= high for low, high in parse_status_codes(self.expect_status))

    @field_validator("expect_body_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
                re.compile(value.encode())  # what the checker matches the body with
            except (re.error, OverflowError) as error:
                raise ValueError(f"bad regular expression: {error}") from None
            except RecursionError:
                raise ValueError("bad regular expression: nested too deeply") from None
        return value


class TcpCheck(_CheckBase):
    """A TCP connect; optionally send bytes and expect the reply to start with a prefix."""

    type: Literal["tcp"] = "tcp"
    send: str | None = Field(None, description="text to send once connected (escapes like \\r\\n allowed)")
    expect: str | None = Field(None, description="prefix the reply must start with")


class DnsCheck(_CheckBase):
    """A DNS query that must get a well-formed answer with the expected rcode."""

    type: Literal["dns"] = "dns"
    name: str = Field(".", description="name to query")
    qtype: Literal["A", "AAAA", "NS", "SOA", "TXT", "CNAME", "MX", "PTR", "SRV"] = Field(
        "SOA", description="query type"
    )
    transport: Literal["udp", "tcp"] = Field("udp", description="query over UDP or TCP")
    rcode: Literal["NOERROR", "NXDOMAIN", "REFUSED", "SERVFAIL"] = Field(
        "NOERROR", description="response code that passes"
    )


Check = Annotated[HttpCheck | TcpCheck | DnsCheck, Field(discriminator="type")]
