"""Picking the checker for a check: one object per (check, backend), reused for every run."""

from typing import Literal, Protocol

import config
from healthchecks import _check_dns, _check_http, _check_tcp, _failure

__all__ = ["Checker", "HttpEngine", "describe_check", "make_checker", "verify_check"]

HttpEngine = Literal["lean", "aiohttp"]
"""Which HTTP client runs HTTP(S) checks: ``"lean"`` (asyncio protocol, the default) or ``"aiohttp"``."""


class Checker(Protocol):
    """Runs one check against one backend, again and again."""

    start: _failure.Start | None
    """Set when the checker can also run without a task: ``start(done)`` begins one check, calls ``done`` with
    its verdict within the timeout (never from within ``start``), and returns a function that abandons it. The
    scheduler drives such checkers from its timers: no task, future or asyncio timeout per check."""

    async def run(self) -> _failure.Verdict:
        """One check: (passed, reason). Never raises for anything the backend does, and ends within the timeout."""

    async def close(self) -> None:
        """Release what the checker keeps between runs (a kept-alive connection, a client session)."""


def make_checker(
    check: config.Check,
    address: config.IpAddress,
    service_port: int,
    *,
    http_engine: HttpEngine = "lean",
) -> Checker:
    """The checker for ``check`` on ``address``, at the check's own port or else the service port."""
    port = check.port or service_port
    if isinstance(check, config.HttpCheck):
        if http_engine == "aiohttp":
            # Imported here: aiohttp's client is 13 MB of memory in every checker process that never uses it.
            from healthchecks import _check_http_aiohttp

            return _check_http_aiohttp.AiohttpChecker(check, address, port)
        return _check_http.LeanHttpChecker(check, address, port)
    if isinstance(check, config.TcpCheck):
        return _check_tcp.TcpChecker(check, address, port)
    return _check_dns.DnsChecker(check, address, port)


def verify_check(
    check: config.Check, address: config.IpAddress, service_port: int
) -> None:
    """Return if ``check`` can run against ``address``; else HealthCheckConfigError, whose ``field`` names the
    check's field at fault (a path that is not Latin-1, a CA file that cannot be loaded).

    Builds the checker as the scheduler would (with its default engine), and opens nothing.
    """
    make_checker(check, address, service_port)


def describe_check(check: config.Check, service_port: int) -> str:
    """A short label for reasons and logs: ``"http :8080/health"``, ``"dns/udp :53"``."""
    port = check.port or service_port
    if isinstance(check, config.HttpCheck):
        return f"{check.type} :{port}{check.path}"
    if isinstance(check, config.DnsCheck):
        return f"dns/{check.transport} :{port}"
    return f"tcp :{port}"
