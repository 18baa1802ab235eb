"""Backend MAC addresses from the kernel's neighbour table (ARP / NDP), via pyroute2.

The kernel resolves and refreshes neighbours by itself once something talks to them; a backend that has no entry
yet is probed with a datagram to its discard port, which makes the kernel send an ARP request or a neighbour
solicitation. Works in the network namespace current when the table is created.
"""

import ipaddress
import logging
import socket
from collections.abc import Iterable

from pyroute2 import IPRoute

__all__ = ["IPAddress", "NeighbourTable"]

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# NUD states with a usable link-layer address (include/uapi/linux/neighbour.h).
_NUD_REACHABLE, _NUD_STALE, _NUD_DELAY, _NUD_PROBE, _NUD_NOARP, _NUD_PERMANENT = 0x02, 0x04, 0x08, 0x10, 0x40, 0x80
_USABLE = _NUD_REACHABLE | _NUD_STALE | _NUD_DELAY | _NUD_PROBE | _NUD_NOARP | _NUD_PERMANENT
_DISCARD_PORT = 9


class NeighbourTable:
    """Reads MACs of given addresses from the kernel and probes the ones it does not know yet.

    >>> table = NeighbourTable()                       # doctest: +SKIP
    >>> table.lookup([ipaddress.ip_address("198.18.0.11")])  # doctest: +SKIP
    {IPv4Address('198.18.0.11'): '02:00:00:00:00:0b'}
    """

    def __init__(self) -> None:
        self._ipr = IPRoute()

    def close(self) -> None:
        """Release the netlink socket."""
        self._ipr.close()

    def lookup(self, addresses: Iterable[IPAddress]) -> dict[IPAddress, str | None]:
        """MAC of each address, or None where the kernel has no usable entry."""
        wanted = set(addresses)
        found: dict[IPAddress, str | None] = dict.fromkeys(wanted)
        for family in (socket.AF_INET, socket.AF_INET6):
            if not any(address.version == (4 if family == socket.AF_INET else 6) for address in wanted):
                continue
            for message in self._ipr.get_neighbours(family=family):
                dst, mac = message.get_attr("NDA_DST"), message.get_attr("NDA_LLADDR")
                if dst is None or mac is None or not message["state"] & _USABLE:
                    continue
                address = ipaddress.ip_address(dst)
                if address in found:
                    found[address] = mac
        return found

    @staticmethod
    def probe(addresses: Iterable[IPAddress]) -> None:
        """Make the kernel resolve these addresses: one small UDP datagram to each one's discard port."""
        for address in addresses:
            family = socket.AF_INET if address.version == 4 else socket.AF_INET6
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                try:
                    sock.sendto(b"", (str(address), _DISCARD_PORT))
                except OSError as error:  # unreachable right now: the next refresh tries again
                    log.debug("event=neighbour_probe_failed backend=%s error=%s", address, error)
