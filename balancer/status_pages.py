"""The snapshot in pages, for the console at any size: services one row each (problems first), a service's
backends on demand.

At 10,000 backends the whole status is 4 MB; a console that draws it all builds 200,000 elements every poll. The
console asks for a page of service rows (``ServiceIndex.services``) and, for the services an operator opens, a
page of their backends (``ServiceIndex.backends``). Rows are ordered so that what needs attention comes first:
services that are down, then those with backends that take no new flows though nobody drained or disabled them
(a *problem*: down, unknown, no MAC; most first), then those with drained or disabled ones, then the rest by VIP
and port; a service's backends the same way. ``ServiceIndex`` orders them once per snapshot (milliseconds at
10,000 backends); a page is a slice of it.
"""

import dataclasses
import ipaddress
import threading
from collections.abc import Sequence, Set
from typing import Any

import config
from balancer import status

__all__ = ["MAX_LIMIT", "PageRequest", "ServiceIndex"]

MAX_LIMIT = 500
"""The most rows one page holds, whatever a client asks for."""


@dataclasses.dataclass(frozen=True)
class PageRequest:
    """What a client asked for: a text to look for, only problems or all, and which rows."""

    query: str = ""
    problems: bool = False
    offset: int = 0
    limit: int = 50

    def __post_init__(self) -> None:
        if self.offset < 0 or not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"offset must be >= 0 and limit 1-{MAX_LIMIT}")


def _address_order(address: str) -> tuple[int, int]:
    parsed = ipaddress.ip_address(address)
    return parsed.version, int(parsed)


def _is_problem(backend: status.BackendReport) -> bool:
    """Takes no new flows though nobody asked for that: down, unknown, no MAC. A drain or a disable is not one."""
    return backend.dataplane != "active" and backend.admin == "enabled"


def _backend_rank(backend: status.BackendReport) -> tuple[int, int, int, int]:
    return (
        0 if _is_problem(backend) else 1,
        0 if backend.dataplane != "active" else 1,
        *_address_order(backend.address),
    )


class _Search:
    """Words that must all match: a word that is an IP address matches a whole address (``198.18.0.1`` is not
    ``198.18.0.10``), any other word any part of the text."""

    def __init__(self, query: str) -> None:
        self.addresses: list[str] = []
        self.words: list[str] = []
        for word in query.lower().split():
            try:
                self.addresses.append(str(ipaddress.ip_address(word)))
            except ValueError:
                self.words.append(word)

    def __bool__(self) -> bool:
        return bool(self.addresses or self.words)

    def matches(self, text: str, addresses: Set[str]) -> bool:
        return all(address in addresses for address in self.addresses) and all(word in text for word in self.words)


@dataclasses.dataclass(frozen=True)
class _Entry:
    service: status.ServiceReport
    id: str
    not_serving: int  # backends taking no new flows, for any reason
    problems: int  # of them, those nobody drained or disabled
    text: str  # lower-case: name, VIP, port and protocol, and every backend's address, for the search
    addresses: frozenset[str]  # the VIP's and every backend's, for a search by address


class ServiceIndex:
    """The services of one snapshot in the order the console shows them, with what the search looks at. A
    service's backends are put in order the first time they are asked for, once per snapshot."""

    def __init__(self, snapshot: status.Snapshot) -> None:
        entries = []
        for service in snapshot.services:
            key = config.vip_port_proto(service.vip, service.port, service.protocol)
            addresses = frozenset([service.vip, *(backend.address for backend in service.backends)])
            text = " ".join([service.name, key, *addresses]).lower()
            not_serving = sum(1 for backend in service.backends if backend.dataplane != "active")
            problems = sum(1 for backend in service.backends if _is_problem(backend))
            entries.append(_Entry(service, key, not_serving, problems, text, addresses))
        entries.sort(
            key=lambda e: (
                e.service.up,
                -e.problems,
                -e.not_serving,
                _address_order(e.service.vip),
                e.service.port,
                e.service.protocol,
            )
        )
        self._entries = entries
        self._by_id = {entry.id: entry for entry in entries}
        self._ordered: dict[str, tuple[status.BackendReport, ...]] = {}
        self._lock = threading.Lock()

    def services(self, request: PageRequest) -> dict[str, Any]:
        """``{"total", "offset", "limit", "services": [row, ...]}``: ``total`` counts every match."""
        search = _Search(request.query)
        matched = [
            entry for entry in self._entries
            if (not request.problems or not entry.service.up or entry.problems)
            and (not search or search.matches(entry.text, entry.addresses))
        ]  # fmt: skip
        rows = [_service_row(entry) for entry in matched[request.offset : request.offset + request.limit]]
        return {"total": len(matched), "offset": request.offset, "limit": request.limit, "services": rows}

    def backends(self, service_id: str, request: PageRequest) -> dict[str, Any] | None:
        """``{"service": row, "total", "offset", "limit", "backends": [...]}`` of one service, those with a problem
        first, then the drained and disabled, then the rest; None for an unknown ``service_id``."""
        entry = self._by_id.get(service_id)
        if entry is None:
            return None
        with self._lock:
            ordered = self._ordered.get(service_id)
            if ordered is None:
                ordered = self._ordered[service_id] = tuple(sorted(entry.service.backends, key=_backend_rank))
        search = _Search(request.query)
        matched: Sequence[status.BackendReport] = ordered
        if request.problems or search:
            matched = [
                backend for backend in ordered
                if (not request.problems or _is_problem(backend))
                and (not search or search.matches(
                    f"{backend.address} {backend.reason} {backend.dataplane}".lower(), {backend.address}))
            ]  # fmt: skip
        page = matched[request.offset : request.offset + request.limit]
        return {
            "service": _service_row(entry),
            "total": len(matched),
            "offset": request.offset,
            "limit": request.limit,
            "backends": [status.to_json(backend) for backend in page],
        }


def _service_row(entry: _Entry) -> dict[str, Any]:
    service = entry.service
    health = {"up": 0, "down": 0, "unknown": 0}
    for backend in service.backends:
        health[backend.health] = health.get(backend.health, 0) + 1
    return {
        "id": entry.id, "name": service.name, "vip": service.vip, "port": service.port, "protocol": service.protocol,
        "up": service.up, "need": service.need, "healthy": service.healthy, "backends": len(service.backends),
        "not_serving": entry.not_serving, "problems": entry.problems, "health": health, "packets": service.packets,
        "bytes": service.bytes, "new_flows": service.new_flows, "drop_no_backend": service.drop_no_backend,
        "table_size": service.table_size,
    }  # fmt: skip
