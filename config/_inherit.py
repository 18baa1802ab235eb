"""Check inheritance: which health checks a backend runs.

The first of these that is set wins: the backend's ``checks``, the backend's ``policy``, the service's ``checks``,
the service's ``policy``. When none is, a TCP service gets one TCP connect check to the service port; a UDP service
has no default (a refused UDP datagram proves little), and a rule reports the omission. A check's unset ``port``
becomes the service's port, so the health checker gets fully resolved checks.
"""

from collections.abc import Mapping
from typing import TYPE_CHECKING

from config.checks import Check, TcpCheck

if TYPE_CHECKING:
    from config._service import BackendConfig, PolicyConfig, ServiceConfig

__all__ = ["resolve_checks", "written_checks", "written_checks_path"]


def written_checks(
    service: "ServiceConfig", backend: "BackendConfig", policies: Mapping[str, "PolicyConfig"]
) -> tuple[Check, ...] | None:
    """The checks the document gives ``backend``, directly or inherited; None when it gives none at all."""
    for owner in (backend, service):
        if owner.checks is not None:
            return owner.checks
        if owner.policy is not None:
            return policies[owner.policy].checks
    return None


def written_checks_path(
    service: "ServiceConfig", backend: "BackendConfig", service_index: int, backend_index: int
) -> tuple[str | int, ...] | None:
    """Where the list ``written_checks`` returns is in the document (``service`` is ``services[service_index]``,
    ``backend`` its ``backends[backend_index]``); None where it returns None."""
    owners = ((backend, ("services", service_index, "backends", backend_index)), (service, ("services", service_index)))
    for owner, path in owners:
        if owner.checks is not None:
            return (*path, "checks")
        if owner.policy is not None:
            return ("policies", owner.policy, "checks")
    return None


def resolve_checks(
    service: "ServiceConfig",
    backend: "BackendConfig",
    policies: Mapping[str, "PolicyConfig"],
    cache: dict[tuple[int, int], tuple[Check, ...]] | None = None,
) -> tuple[Check, ...]:
    """The checks ``backend`` runs, each with its port filled in. Policies must exist (a rule checks that first).

    Backends that inherit the same checks on the same port share one resolved tuple through ``cache``.
    """
    checks = written_checks(service, backend, policies)
    if checks is None:
        checks = _DEFAULT_TCP if service.protocol == "tcp" else ()
    cache = {} if cache is None else cache
    key = (id(checks), service.port)
    if key not in cache:
        cache[key] = tuple(
            check if check.port is not None else check.model_copy(update={"port": service.port}) for check in checks
        )
    return cache[key]


_DEFAULT_TCP: tuple[Check, ...] = (TcpCheck(),)
