"""Picking the checker for a check: one object per (check, backend), reused for every run."""

from typing import Literal, Protocol

import config
from healthchecks import _check_dns, _check_http, _check_tcp, _failure, _health

__all__ = ["Checker", "HttpEngine", "describe_check", "make_checker", "verify_check"]

HttpEngine = Literal["lean", "aiohttp"]
"""Which HTTP client runs HTTP(S) checks: ``"lean"`` (asyncio protocol, the default) or ``"aiohttp"``."""


class Checker(Protocol):
    """Runs one check against one backend, again and again."""

    @property
    def start(self) -> _failure.Start | None:
        """Set when the checker can also run without a task: ``start(done)`` begins one check, calls ``done`` with
        its verdict within the timeout (never from within ``start``), and returns a function that abandons it. The
        scheduler drives such checkers from its timers: no task, future or asyncio timeout per check. (Not kept
        as a bound method on the checker: that would be a reference cycle per checker.)"""

    async def run(self) -> _failure.Verdict:
        """One check: (passed, reason). Never raises for anything the backend does, and ends within the timeout."""

    async def close(self) -> None:
        """Release what the checker keeps between runs (a kept-alive connection, a client session)."""

    def release(self) -> None:
        """Drop at once a connection kept between runs, if any; the checker can still run again."""


def make_checker(
    check: config.Check,
    address: config.IpAddress,
    service_port: int,
    *,
    http_engine: HttpEngine = "lean",
    via: _health.ViaDataPlane | None = None,
) -> Checker:
    """The checker for ``check`` on ``address``, at the check's own port or else the service port.

    A check with ``via: dataplane`` marks its sockets with ``via.mark``, and its failures name the VIP; ValueError
    if ``via`` is None then (the core gives every such target its path).
    """
    port = check.port or service_port
    mark = None
    if check.via == "dataplane":
        if via is None:
            raise ValueError("a check with via: dataplane needs the data plane's path to the VIP")
        mark = via.mark
    checker: Checker
    if isinstance(check, config.HttpCheck):
        if http_engine == "aiohttp":
            # Imported here: aiohttp's client is 13 MB of memory in every checker process that never uses it.
            from healthchecks import _check_http_aiohttp

            checker = _check_http_aiohttp.AiohttpChecker(check, address, port, mark=mark)
        else:
            checker = _check_http.LeanHttpChecker(check, address, port, mark=mark)
    elif isinstance(check, config.TcpCheck):
        checker = _check_tcp.TcpChecker(check, address, port, mark=mark)
    else:
        checker = _check_dns.DnsChecker(check, address, port, mark=mark)
    if via is not None and mark is not None:
        return _ThroughDataPlane(
            checker, via.vip, port, datagram=isinstance(check, config.DnsCheck) and check.transport == "udp"
        )
    return checker


class _ThroughDataPlane:
    """A check through the data path: its failures say so, and a silence says what it most likely means."""

    def __init__(self, checker: Checker, vip: config.IpAddress, port: int, *, datagram: bool) -> None:
        self._checker = checker
        self._where = f"VIP {f'[{vip}]' if vip.version == 6 else vip}:{port} through the data path"
        self._datagram = datagram

    @property
    def start(self) -> _failure.Start | None:
        inner = self._checker.start
        if inner is None:
            return None
        return lambda done: inner(lambda verdict: done(self._explain(verdict)))

    def _explain(self, verdict: _failure.Verdict) -> _failure.Verdict:
        ok, reason = verdict
        if ok:
            return verdict
        silent = reason.startswith("timeout") and ("connecting" in reason or self._datagram)
        if silent:
            return False, f"no answer on {self._where} (is the VIP on the backend's loopback?)"
        return False, f"{reason} (on {self._where})"

    async def run(self) -> _failure.Verdict:
        return self._explain(await self._checker.run())

    async def close(self) -> None:
        await self._checker.close()

    def release(self) -> None:
        self._checker.release()


def verify_check(check: config.Check, address: config.IpAddress, service_port: int) -> None:
    """Return if ``check`` can run against ``address``; else HealthCheckConfigError, whose ``field`` names the
    check's field at fault (a path that is not Latin-1, a CA file that cannot be loaded).

    Builds the checker as the scheduler would (with its default engine), and opens nothing.
    """
    via = _health.ViaDataPlane(0, address) if check.via == "dataplane" else None
    make_checker(check, address, service_port, via=via)


def describe_check(check: config.Check, service_port: int) -> str:
    """A short label for reasons and logs: ``"http :8080/health"``, ``"dns/udp :53"``."""
    port = check.port or service_port
    through = " via dataplane" if check.via == "dataplane" else ""
    if isinstance(check, config.HttpCheck):
        return f"{check.type} :{port}{check.path}{through}"
    if isinstance(check, config.DnsCheck):
        return f"dns/{check.transport} :{port}{through}"
    return f"tcp :{port}{through}"
