"""Everything the daemon would refuse in a configuration, found before any of it is used.

``xdplb check`` and the daemon (at start, and on every reload before anything changes) call ``verify``, so they
refuse the same documents with the same messages. Beyond ``config``'s own validation it asks each lower package
what it cannot take: ``healthchecks.verify_check`` for every check (a path that is not Latin-1, a CA file that
cannot be loaded...) and ``bgp.verify_config`` / ``bgp.verify_route`` for the speaker and every VIP route.
Each refusal is one ``FILE: PATH: MESSAGE`` line of a ``config.ConfigError``::

    lb.yaml: bgp.peers[0].passive: peer 198.18.0.1: passive sessions are not supported by the ExaBGP driver
    lb.yaml: policies.web.checks[0].path: path '/caf\u2603': only Latin-1 characters can be sent (percent-encode...)
"""

import ipaddress
import os
from collections.abc import Iterator

import bgp
import config
import healthchecks

__all__ = ["load", "verify"]

Loc = tuple[str | int, ...]


def load(path: str | os.PathLike[str]) -> config.XdplbConfig:
    """``config.load_config(path)``, then ``verify``: the configuration, or one ConfigError with every problem."""
    loaded = config.load_config(path)
    verify(loaded, source=os.fspath(path))
    return loaded


def verify(cfg: config.XdplbConfig, *, source: str) -> None:
    """Return if the daemon can use ``cfg``; else ConfigError (``source`` names the file) with every refusal."""
    problems = dict.fromkeys((config.format_path(loc), message) for loc, message in _problems(cfg))
    if problems:
        raise config.ConfigError(source, problems)


def _problems(cfg: config.XdplbConfig) -> Iterator[tuple[Loc, str]]:
    yield from _check_problems(cfg)
    if cfg.bgp is not None:
        yield from ((("bgp", *loc), message) for loc, message in bgp.verify_config(cfg.bgp))
        yield from _route_problems(cfg)


def _check_problems(cfg: config.XdplbConfig) -> Iterator[tuple[Loc, str]]:
    """Each check the scheduler would refuse, at the place it is written (once, however many backends run it)."""
    verified: set[tuple[int, int]] = set()
    for i, service in enumerate(cfg.services):
        for j, backend in enumerate(service.backends):
            for k, check in enumerate(cfg.resolved_checks(service, backend)):
                key = (id(check), backend.address.version)  # backends that inherit a check share its object
                if key in verified:
                    continue
                verified.add(key)
                where = cfg.checks_path(i, j)
                loc: Loc = (*where, k) if where is not None else ("services", i)
                try:
                    healthchecks.verify_check(check, backend.address, service.port)
                except healthchecks.HealthCheckConfigError as error:
                    yield ((*loc, error.field) if error.field else loc), str(error)
                except (ValueError, OSError) as error:  # a checker's own bug: still a refusal, never a traceback
                    yield loc, f"{check.type} check cannot be used: {error}"


def _route_problems(cfg: config.XdplbConfig) -> Iterator[tuple[Loc, str]]:
    """Each VIP route the speaker would refuse, at the next hop that makes it so."""
    for i, service in enumerate(cfg.services):
        attributes = cfg.route_attributes(service)
        overridden = service.bgp is not None and "next_hop" in service.bgp.model_fields_set
        for vip in service.vips:
            try:
                bgp.verify_route(ipaddress.ip_network(vip), attributes)
            except bgp.AttributeMismatchError as error:
                where: Loc = ("services", i, "bgp", "next_hop") if overridden else ("bgp", "attributes", "next_hop")
                yield where, str(error)
