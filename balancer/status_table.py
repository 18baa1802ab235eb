"""``xdplb status``: read ``/api/v1/status`` of a running daemon and print it as compact tables.

It only reads (no token needed), with the standard library's HTTP client, so it works wherever Python does::

    $ xdplb status --rate 1
    xdplb 0.1.0, ready, up 2 h, config 15a06d9b1d2f (/etc/xdplb/xdplb.yaml), eth0 (native)

    VIP               ROUTE      REASON
    192.0.2.100/32    announced  all services up
    ...
    SERVICE / BACKEND        HEALTH  REASON              ADMIN    WEIGHT  DATA PLANE     PKT/S
    web 192.0.2.100:80/tcp   up      1 of 3 take flows   need 1
      198.18.0.11            up      status 200          enabled  2       active         18000
"""

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import config
from balancer import api_client

__all__ = ["DEFAULT_URL", "StatusUnavailable", "api_url", "fetch_status", "render", "sample"]

DEFAULT_URL = api_client.DEFAULT_URL
StatusUnavailable = api_client.ApiUnavailable
api_url = api_client.api_url


def fetch_status(base_url: str, *, timeout: float = 5.0, token: str | None = None) -> dict[str, Any]:
    """GET ``/api/v1/status`` from ``base_url`` (with ``token`` when reads need one); StatusUnavailable says why it
    failed."""
    code, status = api_client.call(base_url, "GET", "/api/v1/status", token=token, timeout=timeout)
    if code != 200:
        raise StatusUnavailable(f"the API at {base_url} answered HTTP {code} for /api/v1/status")
    if not isinstance(status, dict) or not {"services", "vips", "peers", "time"} <= status.keys():
        raise StatusUnavailable(f"{base_url} did not answer with an xdplb status")
    return status


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [headers, *rows]]


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= 2 * size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _service_key(service: Mapping[str, Any]) -> tuple[str, str, int, str]:
    return (service["name"], service["vip"], service["port"], service["protocol"])


def _rates(status: Mapping[str, Any], previous: Mapping[str, Any] | None) -> Callable[[tuple[Any, ...], int], str]:
    """A function giving the packets per second of a counter key, "-" when not computable."""
    seconds = status["time"] - previous["time"] if previous is not None else 0.0
    before: dict[tuple[Any, ...], int] = {}
    if previous is not None:
        for service in previous["services"]:
            before[_service_key(service)] = service["packets"]
            for backend in service["backends"]:
                before[(*_service_key(service), backend["address"])] = backend["packets"]

    def rate(key: tuple[Any, ...], packets: int) -> str:
        if seconds <= 0 or key not in before or packets < before[key]:
            return "-"
        return f"{(packets - before[key]) / seconds:.0f}"

    return rate


def render(status: Mapping[str, Any], previous: Mapping[str, Any] | None = None) -> str:
    """The tables for one status; with ``previous`` (an earlier one) a PKT/S column instead of PACKETS."""
    now = status["time"]
    interfaces = ", ".join(f"{name} ({mode})" for name, mode in status.get("interfaces", {}).items())
    lines = [
        f"xdplb {status.get('version', '?')}, {'ready' if status.get('ready') else 'starting'}, "
        f"up {_duration(now - status.get('started_at', now))}, config {str(status.get('config_digest', ''))[:12]} "
        f"({status.get('config_source', '?')}), {interfaces or 'no interfaces'}",
        "",
    ]
    vips = [[v["prefix"], "announced" if v["announced"] else "WITHDRAWN", v["reason"]] for v in status["vips"]]
    lines += _table(["VIP", "ROUTE", "REASON"], vips) if vips else ["no VIPs"]
    lines.append("")
    rate = _rates(status, previous)
    traffic = "PKT/S" if previous is not None else "PACKETS"
    rows: list[list[str]] = []
    for service in status["services"]:
        key = _service_key(service)
        count = service["packets"]
        where = config.vip_port_proto(service["vip"], service["port"], service["protocol"])
        rows.append(
            [
                where if service["name"] == where else f"{service['name']} {where}",
                "up" if service["up"] else "DOWN",
                f"{service['healthy']} of {len(service['backends'])} take flows, need {service['need']}",
                "",
                "",
                "",
                rate(key, count) if previous is not None else str(count),
            ]
        )
        for backend in service["backends"]:
            admin = backend["admin"] + ("*" if backend.get("admin_override") else "")
            count = backend["packets"]
            rows.append(
                [
                    f"  {backend['address']}",
                    backend["health"] if backend["health"] != "down" else "DOWN",
                    backend["reason"],
                    admin,
                    str(backend["weight"]),
                    backend["dataplane"]
                    + (f" ({tunnel})" if (tunnel := backend.get("forwarding", "l2")) != "l2" else ""),
                    rate((*key, backend["address"]), count) if previous is not None else str(count),
                ]
            )
    if rows:
        lines += _table(["SERVICE / BACKEND", "HEALTH", "REASON", "ADMIN", "WEIGHT", "DATA PLANE", traffic], rows)
        if any(b.get("admin_override") for s in status["services"] for b in s["backends"]):
            lines.append("* admin state set through the API (POST .../reset returns to the file's)")
    else:
        lines.append("no services")
    if status["peers"]:
        lines.append("")
        lines += _table(
            ["BGP PEER", "STATE", "SINCE", "ROUTES", "REASON"],
            [
                [
                    p["address"],
                    p["state"],
                    f"{_duration(now - p['since'])} ago",
                    str(p["routes_sent"]),
                    p["reason"] or "",
                ]
                for p in status["peers"]
            ],
        )
    if status.get("last_reload_error"):
        lines += ["", f"last reload failed: {status['last_reload_error']}"]
    return "\n".join(lines) + "\n"


def sample(
    base_url: str, *, rate_seconds: float, timeout: float = 5.0, token: str | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One status, or with ``rate_seconds > 0`` two of them that far apart: ``(latest, earlier)``."""
    first = fetch_status(base_url, timeout=timeout, token=token)
    if rate_seconds <= 0:
        return first, None
    time.sleep(rate_seconds)
    return fetch_status(base_url, timeout=timeout, token=token), first
