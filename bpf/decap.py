"""The backend's side of layer-3 DSR: ``decap.c`` loaded, attached and found again from its interface.

``attach()`` leaves the program on the interface after the process ends (an attached XDP program keeps itself and
its maps); ``status()`` and ``detach()`` find it again through the interface's XDP program id, so nothing is pinned
and nothing runs on the backend. They refuse an interface whose program is not xdplb's decap.
"""

import ctypes
import dataclasses
import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import config
from bpf._kernel_source import ensure_kernel_source
from bpf.dataplane import DEFAULT_GUE_PORT, AttachMode
from bpf.errors import DataPlaneError
from bpf._xdp_programs import maps_of as _maps_of
from bpf._xdp_programs import percpu_values as _percpu_values
from bpf._xdp_programs import prog_name as _prog_name
from bpf._xdp_programs import read as _read
from bpf._xdp_programs import attached as _attached

__all__ = ["MAX_ADDRESSES", "DecapCounters", "DecapStatus", "LoadedDecap", "attach", "detach", "load", "status"]

log = logging.getLogger(__name__)

PROGRAM = Path(__file__).with_name("decap.c")
_PROG_NAME = "xdplb_decap"
MAX_ADDRESSES = 8  # DECAP_ADDRS of decap.c
_LIST_SIZE = 4 + 4 * MAX_ADDRESSES + 16 * MAX_ADDRESSES  # port, counts and the tunnel addresses
_CONFIG_SIZE = 2 * _LIST_SIZE  # struct decap_config: then source counts, pad and the allowed sources
_XDP_FLAGS = {"generic": 1 << 1, "native": 1 << 2}


@dataclass(frozen=True)
class DecapCounters:
    """``struct decap_stats`` of decap.c, summed over CPUs."""

    rx_packets: int = 0
    ipip: int = 0
    gue: int = 0
    malformed: int = 0
    refused: int = 0


@dataclass(frozen=True)
class DecapStatus:
    """What ``status()`` found on an interface."""

    interface: str
    mode: str
    prog_id: int
    addresses: tuple[config.IpAddress, ...]
    gue_port: int | None
    counters: DecapCounters
    sources: tuple[config.IpAddress, ...] = ()  # outer sources allowed; empty: any


class LoadedDecap:
    """The compiled program and its maps, in this process (``load()``)."""

    def __init__(self, bpf: Any) -> None:
        self._bpf = bpf
        self.fn = bpf.load_func(_PROG_NAME.encode(), type(bpf).XDP)

    @property
    def prog_fd(self) -> int:
        return int(self.fn.fd)

    def configure(
        self, gue_port: int | None, addresses: Iterable[config.IpAddress], sources: Iterable[config.IpAddress] = ()
    ) -> None:
        """Take tunnels to ``addresses`` off (at most ``MAX_ADDRESSES`` per family), and GUE to UDP ``gue_port``
        (None: no GUE); with ``sources``, only tunnels from those (per family: a family with none takes any)."""
        if gue_port is not None and not 0 < gue_port < 65536:
            raise DataPlaneError(f"GUE port {gue_port} out of range")
        table = self._bpf[b"decap_config"]
        value = table.Leaf()
        value.gue_port = socket.htons(gue_port or 0)
        for what, given, v4, v6 in (
            ("tunnel addresses", addresses, "addrs_v4", "addrs_v6"),
            ("tunnel sources", sources, "srcs_v4", "srcs_v6"),
        ):
            by_family = _by_family(given, what)
            counts = ("count_v4", "count_v6") if v4 == "addrs_v4" else ("sources_v4", "sources_v6")
            setattr(value, counts[0], len(by_family[4]))
            setattr(value, counts[1], len(by_family[6]))
            for index, address in enumerate(by_family[4]):
                getattr(value, v4)[index] = int.from_bytes(address.packed, "little")
            for index, address in enumerate(by_family[6]):
                ctypes.memmove(ctypes.addressof(getattr(value, v6)[index]), address.packed, 16)
        table[table.Key(0)] = value

    def counters(self) -> DecapCounters:
        table = self._bpf[b"decap_stats"]
        values = table[table.Key(0)]
        return DecapCounters(
            **{f.name: sum(getattr(v, f.name) for v in values) for f in dataclasses.fields(DecapCounters)}
        )

    def cleanup(self) -> None:
        self._bpf.cleanup()


def _by_family(addresses: Iterable[config.IpAddress], what: str) -> dict[int, list[config.IpAddress]]:
    by_family: dict[int, list[config.IpAddress]] = {4: [], 6: []}
    for address in dict.fromkeys(addresses):
        by_family[address.version].append(address)
    for family, found in by_family.items():
        if len(found) > MAX_ADDRESSES:
            raise DataPlaneError(f"at most {MAX_ADDRESSES} IPv{family} {what}, not {len(found)}")
    return by_family


def load(
    *,
    gue_port: int | None = DEFAULT_GUE_PORT,
    addresses: Iterable[config.IpAddress] = (),
    sources: Iterable[config.IpAddress] = (),
) -> LoadedDecap:
    """Compile and load ``decap.c`` with its settings (needs root and kernel headers)."""
    from bcc import BPF  # only on Debian's python, and only needed here

    ensure_kernel_source()
    try:
        loaded = LoadedDecap(BPF(src_file=str(PROGRAM).encode(), cflags=["-w"]))
    except Exception as error:
        raise DataPlaneError(f"loading the decap program failed: {error}") from error
    loaded.configure(gue_port, addresses, sources)
    return loaded


def attach(
    ifname: str,
    *,
    mode: AttachMode = "auto",
    gue_port: int | None = DEFAULT_GUE_PORT,
    addresses: Iterable[config.IpAddress] | None = None,
    sources: Iterable[config.IpAddress] = (),
) -> DecapStatus:
    """Attach the decap program to ``ifname`` for ``addresses`` (default: the interface's own global ones), taking
    tunnels only from ``sources`` when given, and leave it there. Refuses an interface with another XDP program on
    it; replaces an earlier decap."""
    from bcc import BPF

    existing = _attached(ifname)
    if existing is not None and _prog_name(existing[1]) != _PROG_NAME:
        raise DataPlaneError(f"{ifname} has another XDP program (id {existing[1]}): detach it first")
    chosen = tuple(addresses) if addresses is not None else _interface_addresses(ifname)
    if not chosen:
        raise DataPlaneError(f"{ifname} has no global address to take tunnels to: give --address")
    loaded = load(gue_port=gue_port, addresses=chosen, sources=sources)
    # An earlier decap in the mode asked for is replaced in place (no moment without one); in another mode it
    # has to go first.
    modes = ["native", "generic"] if mode == "auto" else [mode]
    if existing is not None and existing[0] not in modes:
        _remove_xdp(ifname, existing[0])
    elif existing is not None:
        modes = [existing[0]]
    for index, candidate in enumerate(modes):
        try:
            BPF.attach_xdp(ifname.encode(), loaded.fn, _XDP_FLAGS[candidate])
        except Exception as error:
            if index + 1 < len(modes):
                continue
            loaded.cleanup()
            raise DataPlaneError(
                f"attaching the decap program to {ifname} in {candidate} mode failed: {error}"
            ) from error
        log.info(
            "event=decap_attached interface=%s mode=%s addresses=%s gue_port=%s",
            ifname,
            candidate,
            ",".join(map(str, chosen)),
            gue_port,
        )
        break
    return status(ifname)


def detach(ifname: str) -> None:
    """Take the decap program off ``ifname``; DataPlaneError if what is there is not it."""
    existing = _attached(ifname)
    if existing is None:
        raise DataPlaneError(f"{ifname} has no XDP program")
    if _prog_name(existing[1]) != _PROG_NAME:
        raise DataPlaneError(f"{ifname} has another XDP program (id {existing[1]}), not xdplb's decap")
    _remove_xdp(ifname, existing[0])
    log.info("event=decap_detached interface=%s", ifname)


def _remove_xdp(ifname: str, mode: str) -> None:
    from bcc import BPF

    try:
        BPF.remove_xdp(ifname.encode(), _XDP_FLAGS.get(mode, 0))
    except Exception as error:  # bcc raises bare Exceptions
        raise DataPlaneError(f"detaching XDP from {ifname} failed: {error}") from error


def status(ifname: str) -> DecapStatus:
    """The decap program on ``ifname``: mode, addresses, GUE port and counters, read from the kernel."""
    existing = _attached(ifname)
    if existing is None:
        raise DataPlaneError(f"{ifname} has no XDP program")
    mode, prog_id = existing
    if _prog_name(prog_id) != _PROG_NAME:
        raise DataPlaneError(f"{ifname} has another XDP program (id {prog_id}), not xdplb's decap")
    maps = _maps_of(prog_id)
    try:
        stats = _percpu_values(maps["decap_stats"], 0, len(dataclasses.fields(DecapCounters)))
        counters = DecapCounters(*stats)
        raw = _read(maps["decap_config"], 0, _CONFIG_SIZE)
        addresses = _listed(raw, 4, raw[2], raw[3])
        sources = _listed(raw, _LIST_SIZE + 4, raw[_LIST_SIZE], raw[_LIST_SIZE + 1])
        port = int.from_bytes(raw[:2], "big")
    finally:
        for fd in maps.values():
            os.close(fd)
    return DecapStatus(ifname, mode, prog_id, addresses, port or None, counters, sources)


def _listed(raw: bytes, at: int, count_v4: int, count_v6: int) -> tuple[config.IpAddress, ...]:
    """The addresses of one list of ``struct decap_config`` (IPv4 then IPv6) that starts at ``at``."""
    v6_at = at + 4 * MAX_ADDRESSES
    return (
        *(ip_address(raw[at + 4 * i : at + 4 * (i + 1)]) for i in range(count_v4)),
        *(ip_address(raw[v6_at + 16 * i : v6_at + 16 * (i + 1)]) for i in range(count_v6)),
    )


# The kernel's side, through libbpf's calls as bcc's library exports them.


def _interface_addresses(ifname: str) -> tuple[config.IpAddress, ...]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        found = [
            ip_address(message.get_attr("IFA_ADDRESS"))
            for message in ipr.get_addr(index=index)
            if message["scope"] == 0
        ]  # global scope only
    return tuple(found)
