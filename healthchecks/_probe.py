"""One check, run once: for a CLI ``check`` command, for the API, and for tests of each checker."""

import time

import config
from healthchecks import _checker, _health

__all__ = ["probe"]


async def probe(
    check: config.Check,
    address: config.IpAddress,
    port: int,
    *,
    http_engine: _checker.HttpEngine = "lean",
    via: _health.ViaDataPlane | None = None,
) -> _health.CheckResult:
    """Run ``check`` once against ``address`` (at the check's port, else ``port``) and return its result."""
    checker = _checker.make_checker(check, address, port, http_engine=http_engine, via=via)
    begun = time.perf_counter()
    try:
        ok, reason = await checker.run()
    finally:
        await checker.close()
    return _health.CheckResult(ok, reason, time.perf_counter() - begun, time.time())
