"""Cross-field rules, one small function each.

A rule takes a validated model and returns its problems as ``(path relative to that model, message)``; the model
validators raise them all at once, so one run reports every mistake. Rules that need the whole document (names
unique across services, policies defined) run once every field and service is valid on its own.
"""

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Protocol

from config import _inherit
from config._types import IpAddress, Problem

if TYPE_CHECKING:
    from config._root import XdplbConfig
    from config._service import ServiceConfig

__all__ = [
    "check_table_size",
    "is_prime",
    "root_problems",
    "service_problems",
    "verify_policy_names",
    "verify_policy_or_checks",
]

_MAX_TABLE = 1048573
_POLICY_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_CHECK_PATHS = 65536  # bpf.check_path.MAX_CHECK_PATHS: the low 16 bits of a check socket's SO_MARK


class _HasChecks(Protocol):
    @property
    def policy(self) -> str | None: ...
    @property
    def checks(self) -> object: ...


def is_prime(n: int) -> bool:
    """Whether n is prime (trial division: Maglev table sizes are small); ``bpf.maglev`` asks it too."""
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


def check_table_size(size: int) -> None:
    """Maglev needs a prime table size; the ValueError names the nearest primes."""
    if is_prime(size):
        return
    below = next((n for n in range(size - 1, 6, -1) if is_prime(n)), None)
    above = next((n for n in range(size + 1, _MAX_TABLE + 1) if is_prime(n)), None)
    nearest = " or ".join(str(n) for n in (below, above) if n is not None)
    raise ValueError(f"table size {size} is not prime (Maglev needs a prime); nearest: {nearest}")


def verify_policy_or_checks(owner: _HasChecks) -> list[Problem]:
    """A service or backend names a policy or lists checks, not both."""
    if owner.policy is not None and owner.checks is not None:
        return [(("checks",), "give either policy or checks, not both")]
    return []


def _duplicates(items: Iterable[object]) -> Iterator[tuple[int, int]]:
    """(index, index of the first equal item) for every item seen before."""
    first: dict[object, int] = {}
    for index, item in enumerate(items):
        if item in first:
            yield index, first[item]
        else:
            first[item] = index


def verify_unique_vips(service: "ServiceConfig") -> list[Problem]:
    """A VIP is listed once per service."""
    return [(("vips", i), f"{service.vips[i]} is already vips[{j}]") for i, j in _duplicates(service.vips)]


def verify_unique_backends(service: "ServiceConfig") -> list[Problem]:
    """A backend address is listed once per service (it is the backend's identity)."""
    addresses = [backend.address for backend in service.backends]
    return [(("backends", i, "address"), f"{addresses[i]} is already backends[{j}]") for i, j in _duplicates(addresses)]


def verify_need(service: "ServiceConfig") -> list[Problem]:
    """``need`` cannot exceed the backends listed, or the VIPs could never be announced."""
    if service.need > len(service.backends):
        count = len(service.backends)
        return [(("need",), f"need is {service.need} but the service has {count} backend{'' if count == 1 else 's'}")]
    return []


def verify_table_fits(service: "ServiceConfig") -> list[Problem]:
    """Every backend needs at least one slot of the Maglev table."""
    if service.table_size < len(service.backends):
        return [(("table_size",), f"table size {service.table_size} is smaller than {len(service.backends)} backends")]
    return []


def verify_tunnelled_backends(service: "ServiceConfig") -> list[Problem]:
    """A tunnelled backend is routed: the kernel's FIB picks the interface, and no VLAN applies."""
    return [
        (
            ("backends", j, field),
            f"{backend.address} is reached by {service.forwarding_of(backend)}: the route "
            f"decides its interface, so it takes no {field}",
        )
        for j, backend in enumerate(service.backends)
        if service.forwarding_of(backend) != "l2"
        for field in ("interface", "vlan")
        if getattr(backend, field) is not None
    ]


def service_problems(service: "ServiceConfig") -> list[Problem]:
    """Every rule about one service on its own."""
    rules = (
        verify_policy_or_checks,
        verify_unique_vips,
        verify_unique_backends,
        verify_need,
        verify_table_fits,
        verify_tunnelled_backends,
    )
    return [problem for rule in rules for problem in rule(service)]


def verify_policy_names(policies: Mapping[str, object]) -> list[Problem]:
    """Policy names are short words, so that `policy: NAME` references read unambiguously."""
    return [
        ((name,), f"bad policy name {name!r}: up to 64 letters, digits and _ . -")
        for name in policies
        if not _POLICY_NAME.match(name)
    ]


def verify_unique_interfaces(config: "XdplbConfig") -> list[Problem]:
    """An interface is listed once."""
    names = [interface.name for interface in config.interfaces]
    return [(("interfaces", i, "name"), f"{names[i]} is already interfaces[{j}]") for i, j in _duplicates(names)]


def verify_unique_service_names(config: "XdplbConfig") -> list[Problem]:
    """Service names identify services in logs, metrics and the API."""
    names = [service.name for service in config.services]
    return [
        (("services", i, "name"), f"name {names[i]!r} is already used by services[{j}]") for i, j in _duplicates(names)
    ]


def verify_unique_listeners(config: "XdplbConfig") -> list[Problem]:
    """Two services cannot both answer the same VIP, port and protocol."""
    problems: list[Problem] = []
    owner: dict[tuple[object, int, str], int] = {}
    for i, service in enumerate(config.services):
        for k, vip in enumerate(service.vips):
            key = (vip, service.port, service.protocol)
            if key in owner and owner[key] != i:
                j = owner[key]
                served = f"{vip} port {service.port}/{service.protocol}"
                message = f"{served} is already served by services[{j}] ({config.services[j].name})"
                problems.append((("services", i, "vips", k), message))
            owner.setdefault(key, i)
    return problems


def verify_backends_are_not_vips(config: "XdplbConfig") -> list[Problem]:
    """A backend cannot be a VIP: its packets would come back to the balancer."""
    vips = {vip for service in config.services for vip in service.vips}
    return [
        (("services", i, "backends", j, "address"), f"{backend.address} is a VIP of this balancer")
        for i, service in enumerate(config.services)
        for j, backend in enumerate(service.backends)
        if backend.address in vips
    ]


def verify_backend_interfaces(config: "XdplbConfig") -> list[Problem]:
    """A backend pinned to an interface names one XDP attaches to, and one address is pinned to one interface (its
    neighbour entry is looked for there, whichever service lists it)."""
    attached = {interface.name for interface in config.interfaces}
    listed = ", ".join(sorted(attached))
    problems: list[Problem] = []
    pinned: dict[object, tuple[str, int, int]] = {}
    for i, service in enumerate(config.services):
        for j, backend in enumerate(service.backends):
            name = backend.interface
            if name is None:
                continue
            path = ("services", i, "backends", j, "interface")
            if name not in attached:
                problems.append((path, f"{name} is not one of the interfaces XDP attaches to ({listed})"))
                continue
            first = pinned.setdefault(backend.address, (name, i, j))
            if first[0] != name:
                problems.append(
                    (
                        path,
                        f"{backend.address} is pinned to {first[0]} by services[{first[1]}]"
                        f".backends[{first[2]}]: one address is on one interface",
                    )
                )
    return problems


def verify_known_policies(config: "XdplbConfig") -> list[Problem]:
    """Every policy named by a service or backend is defined under ``policies``."""
    defined = ", ".join(sorted(config.policies)) or "none"
    problems: list[Problem] = []
    for i, service in enumerate(config.services):
        if service.policy is not None and service.policy not in config.policies:
            problems.append((("services", i, "policy"), f"unknown policy {service.policy!r} (defined: {defined})"))
        for j, backend in enumerate(service.backends):
            if backend.policy is not None and backend.policy not in config.policies:
                message = f"unknown policy {backend.policy!r} (defined: {defined})"
                problems.append((("services", i, "backends", j, "policy"), message))
    return problems


def verify_udp_checks(config: "XdplbConfig") -> list[Problem]:
    """A UDP service gives its checks explicitly: there is no default UDP check. Needs known policies."""
    problems: list[Problem] = []
    for i, service in enumerate(config.services):
        if service.protocol != "udp":
            continue
        bare = [
            j
            for j, backend in enumerate(service.backends)
            if _inherit.written_checks(service, backend, config.policies) is None
        ]
        if bare:
            message = (
                f"udp service without checks for backends {', '.join(map(str, bare))}: there is no default udp check; "
                "set policy or checks (checks: [] runs none)"
            )
            problems.append((("services", i, "checks"), message))
    return problems


def verify_bgp_section(config: "XdplbConfig") -> list[Problem]:
    """Per-service BGP attributes need the ``bgp`` section that would announce them."""
    if config.bgp is not None:
        return []
    return [
        (("services", i, "bgp"), "set, but there is no top-level bgp section to announce the VIPs")
        for i, service in enumerate(config.services)
        if service.bgp is not None
    ]


def verify_unique_peers(config: "XdplbConfig") -> list[Problem]:
    """A BGP neighbour is listed once."""
    if config.bgp is None:
        return []
    addresses = [peer.address for peer in config.bgp.peers]
    return [
        (("bgp", "peers", i, "address"), f"{addresses[i]} is already peers[{j}]") for i, j in _duplicates(addresses)
    ]


def verify_peer_families(config: "XdplbConfig") -> list[Problem]:
    """A BGP session's local address has the family of the neighbour's (one TCP connection)."""
    if config.bgp is None:
        return []
    return [
        (
            ("bgp", "peers", i, "local_address"),
            f"IPv{peer.local_address.version} but the peer address {peer.address} is IPv{peer.address.version}",
        )
        for i, peer in enumerate(config.bgp.peers)
        if peer.local_address is not None and peer.local_address.version != peer.address.version
    ]


def verify_next_hop_family(config: "XdplbConfig") -> list[Problem]:
    """An explicit next hop has the family of every VIP it is announced with (no RFC 8950 extended next hop).

    One problem per service that overrides the next hop, one in all for the default.
    """
    if config.bgp is None:
        return []
    problems: list[Problem] = []
    default = config.bgp.attributes.next_hop
    default_misses: list[str] = []
    for i, service in enumerate(config.services):
        override = service.bgp.next_hop if service.bgp is not None else None
        next_hop = override if override is not None else default
        misses = [
            f"services[{i}].vips[{k}] {vip}"
            for k, vip in enumerate(service.vips)
            if next_hop is not None and vip.version != next_hop.version
        ]
        if misses and override is not None:
            message = f"next hop {override} is IPv{override.version} but {misses[0]} is not"
            problems.append((("services", i, "bgp", "next_hop"), message))
        elif misses:
            default_misses += misses
    if default is not None and default_misses:
        more = f" (and {len(default_misses) - 1} more)" if len(default_misses) > 1 else ""
        message = f"next hop {default} is IPv{default.version} but {default_misses[0]} is not{more}"
        problems.append((("bgp", "attributes", "next_hop"), message))
    return problems


def verify_shared_vip_routes(config: "XdplbConfig") -> list[Problem]:
    """Services sharing a VIP (on other ports) announce one route, so they must agree on its attributes."""
    if config.bgp is None:
        return []
    first: dict[IpAddress, int] = {}
    problems: list[Problem] = []
    for i, service in enumerate(config.services):
        for vip in service.vips:
            j = first.setdefault(vip, i)
            if j != i and config.route_attributes(service) != config.route_attributes(config.services[j]):
                message = f"VIP {vip} is also in services[{j}] ({config.services[j].name}) with other bgp attributes"
                problems.append((("services", i, "bgp"), message))
    return list(dict.fromkeys(problems))


def verify_dataplane_limits(config: "XdplbConfig") -> list[Problem]:
    """The data plane holds every (VIP, port, protocol) and a slot for each of its backends, within its sizes."""
    limits = config.dataplane
    services = sum(len(service.vips) for service in config.services)
    slots = sum(len(service.vips) * len(service.backends) for service in config.services)
    problems: list[Problem] = []
    if services > limits.max_services:
        problems.append(
            (
                ("dataplane", "max_services"),
                f"the services need {services} data-plane services "
                f"(one per VIP, port and protocol) but max_services is {limits.max_services}",
            )
        )
    if slots > limits.max_backends - 1:
        problems.append(
            (
                ("dataplane", "max_backends"),
                f"the services need {slots} backend slots (one per VIP, "
                f"port, protocol and backend) but max_backends is {limits.max_backends} (one is kept unused)",
            )
        )
    return problems


def verify_tunnel_sources(config: "XdplbConfig") -> list[Problem]:
    """A tunnel to a backend of an IP family starts from the node's tunnel source of that family."""
    sources = {4: config.dataplane.tunnel_source_v4, 6: config.dataplane.tunnel_source_v6}
    return [
        (
            ("services", i, "backends", j, "address"),
            f"{backend.address} is reached by {service.forwarding_of(backend)}, which needs "
            f"dataplane.tunnel_source_v{backend.address.version} (the outer source address of the tunnel)",
        )
        for i, service in enumerate(config.services)
        for j, backend in enumerate(service.backends)
        if service.forwarding_of(backend) != "l2" and sources[backend.address.version] is None
    ]


def verify_check_path_families(config: "XdplbConfig") -> list[Problem]:
    """A check through the data path goes to a VIP of the backend's own family: the checker's socket is connected to
    the backend's address, and the data plane puts the VIP in its place. Needs known policies."""
    problems: list[Problem] = []
    for i, service in enumerate(config.services):
        for j, backend in enumerate(service.backends):
            checks = _inherit.written_checks(service, backend, config.policies) or ()
            if service.check_vip(backend) is not None or not any(check.via == "dataplane" for check in checks):
                continue
            where = _inherit.written_checks_path(service, backend, i, j) or ("services", i, "backends", j)
            problems.append(
                (
                    where,
                    f"{backend.address} runs a check with via: dataplane, which goes to a VIP of "
                    f"the backend's family, and {service.name} has no IPv{backend.address.version} VIP",
                )
            )
    paths = sum(
        1
        for service in config.services
        for backend in service.backends
        if any(check.via == "dataplane" for check in _inherit.written_checks(service, backend, config.policies) or ())
    )
    if paths > MAX_CHECK_PATHS:
        problems.append(
            (
                ("services",),
                f"{paths} backends run checks with via: dataplane; the data plane has paths for {MAX_CHECK_PATHS}",
            )
        )
    return problems


def root_problems(config: "XdplbConfig") -> list[Problem]:
    """Every rule about the whole document; udp checks only once policies are known to exist."""
    rules = (
        verify_unique_interfaces,
        verify_unique_service_names,
        verify_unique_listeners,
        verify_backends_are_not_vips,
        verify_backend_interfaces,
        verify_known_policies,
        verify_bgp_section,
        verify_unique_peers,
        verify_peer_families,
        verify_next_hop_family,
        verify_shared_vip_routes,
        verify_dataplane_limits,
        verify_tunnel_sources,
    )
    problems = [problem for rule in rules for problem in rule(config)]
    if not verify_known_policies(config):
        problems += verify_udp_checks(config) + verify_check_path_families(config)
    return problems
