"""Route health injection: VIP prefixes announced to BGP peers through a supervised ExaBGP child.

The core's interface::

    bgp.verify_config(bgp_config)              # [(path, message)]: what Speaker() would refuse, all of it
    speaker = bgp.Speaker(bgp_config)          # config.BgpConfig; checks peers (BgpError) but runs nothing
    await speaker.start()                      # ExaBGP up with no routes; sessions come up on their own
    speaker.set_routes({prefix: attrs, ...})   # the complete set wanted now (absent: withdrawn); not a coroutine:
                                               # records it and returns at once, the speaker's writer task sends
                                               # the difference to ExaBGP, batched; idempotent
    speaker.announced                          # Mapping[prefix, RouteAttributes]: the set wanted, read-only
    speaker.pending()                          # frozenset of prefixes ExaBGP has not acknowledged yet
    speaker.rejected                           # Mapping[prefix, CommandError]: changes ExaBGP refused
    await speaker.flush()                      # wait until ExaBGP acknowledged the set (False: it is restarting)
    await speaker.announce(prefix, attrs)      # one route, waiting for ExaBGP (raises CommandError if refused)
    await speaker.withdraw(prefix)             # idempotent
    speaker.peers()                            # Mapping[peer address, PeerState(state, since, routes_sent, reason)]
    async for state in speaker.watch_peers():  # each PeerState change, until stop(); or on_peer_change=callback
        ...
    await speaker.reconfigure(new_bgp_config)  # in place: ['peer 192.0.2.9 added', ...]; only those sessions
                                               # are touched; ReconfigureError leaves the old config in force
    await speaker.stop()                       # withdraw all, wait until sent, Cease to each peer, stop ExaBGP

``Speaker`` is also an async context manager. Attributes are used as given: merge the VIP's overrides into the
defaults first (``bgp_config.attributes.merged(vip_attributes)``). A prefix goes to every peer of its address
family (IPv4 peers carry ipv4 unicast, IPv6 peers ipv6 unicast); ``next_hop`` unset means the session's own
address. Nothing is announced until ``set_routes`` or ``announce`` is called.

Prefixes and attributes are ``ipaddress.IPv4Network``/``IPv6Network`` and ``config.RouteAttributes``. Routes that
share a family and attributes go to ExaBGP in one command (``announce attributes ... nlri P1 P2 ...``), several
commands in flight at once; withdrawing everything is one ``clear adj-rib out``.

Errors, all ``BgpError`` (a ``config.XdplbError``): ``CommandError`` (ExaBGP answered ``error``; nothing changed),
``ReconfigureError`` (``reconfigure`` refused or could not apply a config; nothing changed),
``ExabgpTimeoutError`` (ExaBGP acknowledged nothing for ``command_timeout`` seconds of our loop's attention: it is
restarted and the wanted set replayed; also a ``TimeoutError``),
``AttributeMismatchError`` (e.g. an IPv4 next-hop for an IPv6 prefix; also a ``ValueError``), and
``SpeakerStateError`` (a call before ``start``/after ``stop``; also a ``RuntimeError``).

Faults: ExaBGP runs with PDEATHSIG and behind a bridge that shuts it down when this process's end of the API socket
closes, so routes never outlive the daemon (SIGKILL included). If ExaBGP exits it is restarted with doubling
back-off and the wanted set is replayed; a peer that reconnects gets the current set from ExaBGP. ExaBGP runs with
two patches (``_exabgp_main``): its connect retries back off to at most 5 s (not 60), and its shutdown sends each
established peer a Cease NOTIFICATION (Administrative Shutdown) rather than closing the TCP connection bare.
"""

import config
from bgp import _exabgp_config
from bgp._errors import (
    AttributeMismatchError,
    BgpError,
    CommandError,
    ExabgpTimeoutError,
    ReconfigureError,
    SpeakerStateError,
)
from bgp._peers import PeerState, PeerStatus
from bgp._speaker import Speaker


def verify_config(bgp_config: config.BgpConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """What ``Speaker(bgp_config)`` would refuse, each as (path within the ``bgp`` section, message); ``[]`` if
    nothing. ``[(("peers", 0, "passive"), "peer 198.18.0.1: passive sessions are not supported ...")]``."""
    return _exabgp_config.problems(bgp_config)


def verify_route(prefix: config.Prefix, attributes: config.RouteAttributes) -> None:
    """Return if ``prefix`` can be announced with ``attributes``; else the AttributeMismatchError ``set_routes``
    would raise."""
    _exabgp_config.check_attributes(prefix, attributes)


__all__ = [
    "AttributeMismatchError",
    "BgpError",
    "CommandError",
    "ExabgpTimeoutError",
    "PeerState",
    "PeerStatus",
    "ReconfigureError",
    "Speaker",
    "SpeakerStateError",
    "verify_config",
    "verify_route",
]
