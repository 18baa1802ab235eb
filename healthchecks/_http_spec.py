"""What an HTTP check sends and how it judges the answer, shared by the lean and the aiohttp checkers."""

import re
import ssl

import config
from healthchecks import _errors, _failure, _tls

__all__ = ["HttpSpec"]

USER_AGENT = "xdplb-healthcheck"


class HttpSpec:
    """The request and the expectations of one HTTP(S) check against one address and port."""

    def __init__(self, check: config.HttpCheck, address: config.IpAddress, port: int) -> None:
        self.check = check
        self.address = str(address)
        self.port = port
        self.timeout = check.timing.timeout
        self.tls = check.type == "https"
        literal = f"[{address}]" if address.version == 6 else self.address
        default_port = 443 if self.tls else 80
        self.host = check.host or (literal if port == default_port else f"{literal}:{port}")
        self.url = f"{'https' if self.tls else 'http'}://{literal}:{port}{check.path}"
        self.ssl: ssl.SSLContext | None = None
        self.server_hostname: str | None = None
        if self.tls:
            self.ssl = _context(check)
            self.server_hostname = check.sni or check.host or self.address
        if _UNSAFE.search(check.path) or " " in check.path:
            raise _errors.HealthCheckConfigError(
                f"path {check.path!r}: no spaces, CR, LF or NUL (percent-encode them)", field="path"
            )
        if not _sendable(check.path):
            raise _errors.HealthCheckConfigError(
                f"path {check.path!r}: only Latin-1 characters can be sent (percent-encode the others)", field="path"
            )
        if _UNSAFE.search(self.host) or " " in self.host:
            raise _errors.HealthCheckConfigError(f"host {self.host!r}: no spaces, CR, LF or NUL", field="host")
        if not _sendable(self.host):
            raise _errors.HealthCheckConfigError(
                f"host {self.host!r}: only Latin-1 characters can be sent (write a name in its xn-- form)", field="host"
            )
        for name, value in check.headers.items():
            if _UNSAFE.search(name) or _UNSAFE.search(value) or not name or ":" in name or " " in name:
                raise _errors.HealthCheckConfigError(
                    f"header {name!r}: a name without ':' or spaces, and no CR, LF or NUL in name or value",
                    field="headers",
                )
            if not (_sendable(name) and _sendable(value)):
                raise _errors.HealthCheckConfigError(
                    f"header {name!r}: only Latin-1 characters can be sent", field="headers"
                )
        overridden = {name.lower() for name in check.headers}
        defaults = {"Host": self.host, "User-Agent": USER_AGENT}
        self.headers = {k: v for k, v in defaults.items() if k.lower() not in overridden} | dict(check.headers)
        self._ranges = config.parse_status_codes(check.expect_status)
        try:
            self._regex = re.compile(check.expect_body_regex.encode()) if check.expect_body_regex else None
        except (re.error, OverflowError, RecursionError) as error:
            raise _errors.HealthCheckConfigError(
                f"expect_body_regex: cannot match bytes: {error}", field="expect_body_regex"
            ) from None
        self._substring = check.expect_body.encode() if check.expect_body else None
        self.want_body = check.method != "HEAD" and (self._regex is not None or self._substring is not None)

    def request(self, *, keepalive: bool) -> bytes:
        """The request bytes for the lean checker."""
        lines = [f"{self.check.method} {self.check.path} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        if not any(name.lower() == "connection" for name in self.headers):
            lines.append("Connection: keep-alive" if keepalive else "Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def judge(self, status: int, body: bytes, *, truncated: bool) -> _failure.Verdict:
        """Whether ``status`` and ``body`` pass, and why (``"status 503, expected 200-299"``)."""
        if not any(low <= status <= high for low, high in self._ranges):
            return False, f"status {status}, expected {self.check.expect_status}"
        where = f" (first {len(body)} bytes)" if truncated else ""
        if self._substring is not None and self._substring not in body:
            return False, f"body mismatch: no {self.check.expect_body!r}{where}"
        if self._regex is not None and self._regex.search(body) is None:
            return False, f"body mismatch: no match for /{self.check.expect_body_regex}/{where}"
        return True, f"status {status}"


_UNSAFE = re.compile(r"[\r\n\0]")


def _sendable(text: str) -> bool:
    """Whether ``text`` can go in a request line or header: HTTP/1.1 sends them as Latin-1."""
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _context(check: config.HttpCheck) -> ssl.SSLContext:
    try:
        return _tls.client_context(verify=check.tls_verify, ca_file=check.ca_file)
    except (OSError, ValueError) as error:  # missing, unreadable, not PEM (ssl.SSLError), a NUL in the name
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise _errors.HealthCheckConfigError(
            f"ca_file {check.ca_file!r}: cannot load: {reason}", field="ca_file"
        ) from None
