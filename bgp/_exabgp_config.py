"""What ExaBGP is given: its configuration file, its environment, and the API commands it is sent.

Pure functions, no I/O. Each VIP prefix goes to the peers of its own address family: an IPv4 peer carries
``ipv4 unicast``, an IPv6 peer ``ipv6 unicast``, so that ``next-hop self`` is always an address of the session.
"""

import os
import pwd
import re
import shlex
from collections.abc import Collection, Mapping, Sequence

from bgp import _errors
from config import BgpConfig, BgpPeer, IpAddress, Prefix, RouteAttributes

__all__ = [
    "PROCESS_NAME",
    "WITHDRAW_ALL",
    "announce_command",
    "check_attributes",
    "environment",
    "problems",
    "render",
    "withdraw_command",
]


PROCESS_NAME = "xdplb"
# Withdraws every route from every peer, keeping the sessions: one command however many routes (field notes).
WITHDRAW_ALL = "clear adj-rib out"
# ExaBGP's tokeniser has no escapes inside a quoted string.
_BAD_PASSWORD = re.compile(r"[\"'\\\n\r]")
_MAX_PASSWORD = 80


def environment(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with the settings ExaBGP must run with under xdplb."""
    env = {key: value for key, value in base.items() if not key.lower().startswith("exabgp")}
    env.update(
        {
            # As root ExaBGP would setuid to `nobody`, which also clears PR_SET_PDEATHSIG (field notes).
            "exabgp_daemon_user": pwd.getpwuid(os.getuid()).pw_name,
            "exabgp_daemon_drop": "false",
            "exabgp_daemon_daemonize": "false",
            "exabgp_api_ack": "true",
            "exabgp_api_encoder": "json",
            # The bridge is never respawned: its death ends ExaBGP, and the supervisor restarts the pair.
            "exabgp_api_respawn": "false",
            "exabgp_api_terminate": "true",
            "exabgp_api_cli": "false",
            "exabgp_tcp_bind": "",
            "exabgp_log_destination": "stdout",
            "exabgp_log_statistics": "false",
        }
    )
    return env


def problems(config: BgpConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """What in ``config`` ExaBGP cannot be given, each at its path within the ``bgp`` section; ``[]`` if nothing."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    first: dict[IpAddress, int] = {}
    for index, peer in enumerate(config.peers):
        where: tuple[str | int, ...] = ("peers", index)
        if peer.address in first:
            found.append(((*where, "address"), f"peer {peer.address} is already peers[{first[peer.address]}]"))
        first.setdefault(peer.address, index)
        if peer.passive:
            found.append(
                ((*where, "passive"), f"peer {peer.address}: passive sessions are not supported by the ExaBGP driver")
            )
        if peer.local_address is not None and peer.local_address.version != peer.address.version:
            found.append(
                (
                    (*where, "local_address"),
                    f"peer {peer.address}: local address {peer.local_address} is of another family",
                )
            )
        if peer.password is not None and (not peer.password or _BAD_PASSWORD.search(peer.password)):
            # The password itself is never shown: errors reach logs and the status API.
            found.append(
                (
                    (*where, "password"),
                    f"peer {peer.address}: the MD5 password must be non-empty, without "
                    "quotes, backslashes or line breaks",
                )
            )
        elif peer.password is not None and len(peer.password.encode()) > _MAX_PASSWORD:
            found.append(
                (
                    (*where, "password"),
                    f"peer {peer.address}: the MD5 password must be at most "
                    f"{_MAX_PASSWORD} bytes (the kernel's TCP-MD5 key size; ExaBGP refuses longer ones)",
                )
            )
    return found


def render(config: BgpConfig, *, bridge: list[str], closing: Collection[IpAddress] = ()) -> str:
    """The ExaBGP configuration for ``config``, with ``bridge`` (argv) as the API process; BgpError naming the first
    of ``problems(config)`` if there is one.

    The peers whose address is in ``closing`` are made passive: reloaded, that makes ExaBGP close their sessions
    with a Cease NOTIFICATION (6/3, peer de-configured) and not connect again, where removing a neighbour outright
    closes its TCP connection without a word.
    """
    found = problems(config)
    if found:
        raise _errors.BgpError(found[0][1])
    lines = [
        f"process {PROCESS_NAME} {{",
        f"    run {shlex.join(bridge)};",
        "    encoder json;",
        "}",
    ]
    for peer in config.peers:
        lines += _neighbor(config, peer, passive=peer.address in closing)
    return "\n".join(lines) + "\n"


def _neighbor(config: BgpConfig, peer: BgpPeer, *, passive: bool = False) -> list[str]:
    family = "ipv4" if peer.address.version == 4 else "ipv6"
    body = [
        f"router-id {config.router_id};",
        f"local-as {peer.local_as or config.local_as};",
        f"peer-as {peer.peer_as};",
        f"connect {peer.port};",
        f"hold-time {peer.hold_time};",
    ]
    if peer.local_address is not None:
        body.append(f"local-address {peer.local_address};")
    if peer.password is not None:
        body.append(f'md5-password "{peer.password}";')
    if passive:
        body.append("passive true;")
    if config.graceful_restart is not None:
        # The peer keeps our routes when a session drops without a NOTIFICATION; it drops the stale ones at our
        # End-of-RIB, which the speaker sends once the daemon's routes are complete (ExaBGP's own would come first).
        body += [f"capability {{ graceful-restart {config.graceful_restart.restart_time}; }}", "manual-eor true;"]
    body += [
        f"family {{ {family} unicast; }}",
        f"api {{ processes [ {PROCESS_NAME} ]; neighbor-changes; send {{ parsed; update; }} }}",
    ]
    return [f"neighbor {peer.address} {{", *(f"    {line}" for line in body), "}"]


def check_attributes(prefix: Prefix, attributes: RouteAttributes) -> None:
    """AttributeMismatchError if ``attributes`` cannot go with ``prefix`` (a next-hop of another family, or one
    that is not a unicast address)."""
    next_hop = attributes.next_hop
    if next_hop is not None and next_hop.version != prefix.version:
        raise _errors.AttributeMismatchError(f"next-hop {next_hop} is not of the family of {prefix}")
    if next_hop is not None and (next_hop.is_unspecified or next_hop.is_multicast):
        # ExaBGP sends these; BIRD then resets the whole session ("Invalid NEXT_HOP").
        raise _errors.AttributeMismatchError(f"next-hop {next_hop} is not a unicast address")


def announce_command(peers: Sequence[IpAddress], prefixes: Sequence[Prefix], attributes: RouteAttributes) -> str:
    """One API command announcing ``prefixes`` (one family, checked with ``check_attributes``) to ``peers``.

    ExaBGP parses the attributes once for every prefix of the command, about twice as fast as a command each::

        neighbor 127.0.0.1 announce attributes next-hop self med 10 nlri 192.0.2.10/32 192.0.2.11/32
    """
    parts = [f"{_selector(peers)} announce attributes next-hop {attributes.next_hop or 'self'}"]
    if attributes.med is not None:
        parts.append(f"med {attributes.med}")
    if attributes.local_preference is not None:
        parts.append(f"local-preference {attributes.local_preference}")
    if attributes.communities:
        parts.append(f"community [ {' '.join(attributes.communities)} ]")
    if attributes.large_communities:
        parts.append(f"large-community [ {' '.join(attributes.large_communities)} ]")
    parts.append(f"nlri {' '.join(map(str, prefixes))}")
    return " ".join(parts)


def withdraw_command(peers: Sequence[IpAddress], prefixes: Sequence[Prefix]) -> str:
    """One API command withdrawing ``prefixes`` (one family) from ``peers``."""
    return f"{_selector(peers)} withdraw attributes nlri {' '.join(map(str, prefixes))}"


def _selector(peers: Sequence[IpAddress]) -> str:
    # Only the sessions of the prefixes' family: ExaBGP otherwise logs an error per prefix for every other peer.
    if not peers:
        raise ValueError("a command needs at least one peer")
    return " , ".join(f"neighbor {peer}" for peer in peers)
