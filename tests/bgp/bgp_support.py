"""Helpers shared by the BGP tests (fixtures live in conftest.py)."""

import asyncio
import ipaddress
import os
import shutil
import time
from collections.abc import Callable
from typing import Literal, TypeVar

import pytest

import bgp
import config
from balancer.lab import bird_lab

T = TypeVar("T")

# The speaker's side of every loopback session; BIRD listens on 127.0.0.1 / ::1 on a port of its own.
SPEAKER_V4 = ipaddress.ip_address("127.0.0.2")
SPEAKER_V6 = ipaddress.ip_address("::1")
BIRD_V4 = ipaddress.ip_address("127.0.0.1")
BIRD_V6 = ipaddress.ip_address("::1")
LOCAL_AS = 4200000001  # 4-byte ASN on the xdplb side; the IPv4 session is iBGP (local-pref is kept)
EBGP_AS = 65002  # BIRD's AS on the IPv6 session


def need_bird() -> None:
    """Skip without bird2 on a laptop; fail under CI=true."""
    if shutil.which("bird") and shutil.which("birdc"):
        return
    if os.environ.get("CI") == "true":
        pytest.fail("bird/birdc (Debian bird2) missing, and CI=true: these tests must run")
    pytest.skip("bird2 is not installed")


async def wait_for(
    probe: Callable[[], T | Literal[False] | None], *, timeout: float = 10.0, interval: float = 0.005
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with the last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        await asyncio.sleep(interval)


def bird_peers() -> list[bird_lab.BirdPeer]:
    """BIRD's side: an iBGP IPv4 session and an eBGP IPv6 session, both to the speaker."""
    return [
        bird_lab.BirdPeer(name="xdplb4", address=SPEAKER_V4, peer_as=LOCAL_AS, hold_time=9),
        bird_lab.BirdPeer(name="xdplb6", address=SPEAKER_V6, peer_as=LOCAL_AS, local_as=EBGP_AS),
    ]


def speaker_config(lab: bird_lab.BirdLab) -> config.BgpConfig:
    """The BgpConfig peering with ``lab``'s two sessions."""
    return config.BgpConfig(
        local_as=LOCAL_AS,
        router_id=ipaddress.IPv4Address("192.0.2.1"),
        peers=(
            config.BgpPeer(address=BIRD_V4, peer_as=LOCAL_AS, local_address=SPEAKER_V4, port=lab.port, hold_time=9),
            config.BgpPeer(address=BIRD_V6, peer_as=EBGP_AS, local_address=SPEAKER_V6, port=lab.port, hold_time=15),
        ),
    )


def established(speaker: bgp.Speaker) -> bool:
    """Whether every session of ``speaker`` is Established, as ExaBGP reports it."""
    return all(state.state is bgp.PeerStatus.ESTABLISHED for state in speaker.peers().values())


def bird_established(lab: bird_lab.BirdLab) -> bool:
    """Whether every BGP session of ``lab`` is Established, as BIRD reports it."""
    return all(p.bgp_state == "Established" for p in lab.protocols().values() if p.proto == "BGP")
