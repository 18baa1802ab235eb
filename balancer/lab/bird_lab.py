"""A BIRD 2 router for tests and the demo lab: config, child process, and parsed ``birdc`` output.

Each run has its own directory (config, control socket, log), its own port, and no ``protocol kernel`` unless it
runs inside a network namespace the caller made (``kernel_merge_paths``, for ECMP over two xdplb nodes). Sessions are
passive on BIRD's side (the xdplb speakers connect), ``multihop`` with ``strict bind`` so several BIRDs and speakers
can share loopback, and ``error wait time 1, 2`` so a flapping session is retried within seconds, not a minute.

Example::

    with BirdLab(peers=[BirdPeer(name="xdplb1", address=ip_address("127.0.0.2"), peer_as=65001)]) as bird:
        bird.port                           # the port the speaker must connect to
        bird.protocols()["xdplb1"].bgp_state  # 'Established'
        bird.route("192.0.2.10/32").med     # 100
"""

import dataclasses
import ipaddress
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from config import IpAddress, Prefix, XdplbError

__all__ = ["BirdError", "BirdLab", "BirdPeer", "BirdProtocol", "BirdRoute"]


_ROUTE = re.compile(
    r"^(?P<prefix>\S+)?\s+(?P<kind>\w+)\s+\[(?P<proto>\S+) (?P<since>\S+)(?: from (?P<source>\S+))?\]"
    r"\s*(?P<primary>\*)?\s*\((?P<pref>\d+)(?:/\S+)?\)"
)
_PAIR = re.compile(r"\((\d+),\s*(\d+)\)")
_TRIPLE = re.compile(r"\((\d+),\s*(\d+),\s*(\d+)\)")


class BirdError(XdplbError, RuntimeError):
    """BIRD failed to start, or ``birdc`` failed; the message carries BIRD's output."""


@dataclasses.dataclass(frozen=True)
class BirdPeer:
    """One BGP session of the lab router, from BIRD's side: ``address`` is the xdplb speaker."""

    name: str
    address: IpAddress
    peer_as: int
    local_as: int | None = None  # default: the peer's AS (iBGP, so local-pref is carried)
    local_address: IpAddress | None = None  # default: 127.0.0.1 or ::1 by the peer's family
    password: str | None = None
    hold_time: int | None = None
    multihop: bool = True  # False for a directly connected peer (next hops then resolve as direct)


@dataclasses.dataclass(frozen=True)
class BirdRoute:
    """One route of ``show route all``; communities are written as in xdplb's config (``65000:1``, ``65000:1:2``)."""

    prefix: Prefix
    protocol: str
    kind: str  # 'unicast', 'unreachable', ...
    source: str | None
    primary: bool
    preference: int
    next_hop: IpAddress | None
    gateways: tuple[IpAddress, ...]
    med: int | None
    local_pref: int | None
    as_path: tuple[int, ...]
    communities: tuple[str, ...]
    large_communities: tuple[str, ...]
    attributes: Mapping[str, str]


_SINCE_JITTER_S = 0.005


def _seconds_of_day(since: str) -> float:
    hours, minutes, seconds = since.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@dataclasses.dataclass(frozen=True)
class BirdProtocol:
    """One line of ``show protocols``."""

    name: str
    proto: str
    table: str
    state: str  # 'up', 'start', 'down'
    since: str
    info: str

    @property
    def bgp_state(self) -> str:
        """The BGP session state for a BGP protocol: 'Established', 'Idle', 'Active', ..."""
        return self.info.split(" ", 1)[0] if self.info else ""

    def same_since(self, other: "BirdProtocol") -> bool:
        """Whether both lines tell of the same state change.

        BIRD keeps ``since`` on its monotonic clock and shows it converted to wall time at each ``show``, so two
        readings of one change can differ by a millisecond; a restart moves it by more than that.
        """
        return abs(_seconds_of_day(self.since) - _seconds_of_day(other.since)) <= _SINCE_JITTER_S


class BirdLab:
    """A ``bird -f`` child with its own config, port and control socket; a context manager."""

    def __init__(
        self,
        *,
        peers: Sequence[BirdPeer],
        router_id: str = "192.0.2.254",
        port: int | None = None,
        netns: str | None = None,
        kernel_merge_paths: bool = False,
        bird: str = "bird",
        birdc: str = "birdc",
    ) -> None:
        if kernel_merge_paths and netns is None:
            raise BirdError("kernel_merge_paths writes routes to the kernel: only inside a namespace you made")
        self.peers = tuple(peers)
        self.router_id = router_id
        self.port = port if port is not None else (179 if netns else _free_port())
        self.netns = netns
        self.kernel_merge_paths = kernel_merge_paths
        self._bird = bird
        self._birdc = birdc
        self.workdir = Path(tempfile.mkdtemp(prefix="xdplb-bird-"))
        self.socket = self.workdir / "bird.ctl"
        self.config_path = self.workdir / "bird.conf"
        self.log_path = self.workdir / "bird.log"
        self._process: subprocess.Popen[bytes] | None = None

    def config_text(self) -> str:
        """The BIRD configuration this lab runs with."""
        lines = [f"router id {self.router_id};", "log stderr all;", "protocol device { }"]
        if self.kernel_merge_paths:
            for family in sorted({_family(peer.address) for peer in self.peers}):
                lines.append(f"protocol kernel {{ {family} {{ export all; }}; merge paths on; }}")
        for peer in self.peers:
            local = peer.local_address or ipaddress.ip_address("127.0.0.1" if peer.address.version == 4 else "::1")
            body = [
                f"local {local} port {self.port} as {peer.local_as or peer.peer_as};",
                f"neighbor {peer.address} as {peer.peer_as};",
                "strict bind;",
                "passive on;",
                "error wait time 1, 2;",
                "multihop;" if peer.multihop else "direct;",
                "debug { states, routes, events };",  # to the run's log: the order of withdrawals and closes
            ]
            if peer.hold_time is not None:
                body.append(f"hold time {peer.hold_time};")
            if peer.password is not None:
                body.append(f'password "{peer.password}";')
            body.append(f"{_family(peer.address)} {{ import all; export none; }};")
            lines.append(f"protocol bgp {peer.name} {{\n    " + "\n    ".join(body) + "\n}")
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """Write the config, start BIRD, and wait until it answers on its control socket."""
        self.config_path.write_text(self.config_text())
        argv = [self._bird, "-f", "-c", str(self.config_path), "-s", str(self.socket)]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 5.0
        while True:
            if self._process.poll() is not None:
                error = BirdError(f"bird exited with {self._process.returncode}: {self.log()[-2000:]}")
                self.stop()
                raise error
            if self.socket.exists():
                try:
                    self.birdc("show", "status")
                    return
                except BirdError:
                    pass
            if time.monotonic() > deadline:
                self.stop()
                raise BirdError(f"bird did not open {self.socket} within 5s")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop BIRD (SIGTERM, then SIGKILL) and remove the run's directory. Idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "BirdLab":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """BIRD's process id while it runs."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def log(self) -> str:
        """What BIRD logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def birdc(self, *command: str) -> str:
        """Run one ``birdc`` command on this BIRD's socket; its output without the greeting line."""
        done = subprocess.run(
            [self._birdc, "-s", str(self.socket), *command], capture_output=True, text=True, timeout=10, check=False
        )
        # birdc exits non-zero on an empty answer ("Network not found") too.
        empty = "Network not found" in done.stdout
        if (done.returncode != 0 and not empty) or done.stdout.startswith("Unable to connect"):
            raise BirdError(f"birdc {' '.join(command)}: {done.stdout.strip()} {done.stderr.strip()}")
        lines = done.stdout.splitlines()
        return "\n".join(line for line in lines if not line.startswith("BIRD ") or not line.endswith("ready."))

    def protocols(self) -> dict[str, BirdProtocol]:
        """Every protocol of ``show protocols``, by name."""
        out: dict[str, BirdProtocol] = {}
        for line in self.birdc("show", "protocols").splitlines()[1:]:
            fields = line.split(None, 5)
            if len(fields) >= 5:
                name, proto, table, state, since = fields[:5]
                info = fields[5].strip() if len(fields) > 5 else ""
                out[name] = BirdProtocol(name, proto, table, state, since, info)
        return out

    def routes(self, prefix: str | Prefix | None = None, *, protocol: str | None = None) -> list[BirdRoute]:
        """Every route (all tables) of ``show route [PREFIX] all [protocol P]``; [] if there is none."""
        command = ["show", "route"] + ([str(prefix)] if prefix is not None else []) + ["all"]
        if protocol is not None:
            command += ["protocol", protocol]
        return parse_routes(self.birdc(*command))

    def route(self, prefix: str | Prefix) -> BirdRoute | None:
        """The primary route for exactly ``prefix``, or None."""
        wanted = ipaddress.ip_network(prefix)
        best = [route for route in self.routes(wanted) if route.prefix == wanted and route.primary]
        return best[0] if best else None


def parse_routes(text: str) -> list[BirdRoute]:
    """The routes in ``birdc show route ... all`` output."""
    routes: list[dict[str, Any]] = []
    prefix: Prefix | None = None
    for line in text.splitlines():
        if line.startswith("Table ") or not line.strip() or line.strip() == "Network not found":
            continue
        match = _ROUTE.match(line)
        if match is not None and not line.startswith("\t"):
            if match["prefix"]:
                prefix = ipaddress.ip_network(match["prefix"])
            assert prefix is not None, line
            routes.append({"match": match, "prefix": prefix, "attrs": {}, "gateways": []})
        elif routes and line.startswith("\t"):
            body = line.strip()
            if body.startswith("via "):
                routes[-1]["gateways"].append(ipaddress.ip_address(body.split()[1]))
            elif ": " in body or body.endswith(":"):
                key, _, value = body.partition(":")
                routes[-1]["attrs"][key.strip()] = value.strip()
    return [_route(raw) for raw in routes]


def _route(raw: dict[str, Any]) -> BirdRoute:
    match, attrs = raw["match"], raw["attrs"]
    next_hop = attrs.get("BGP.next_hop", "").split()
    return BirdRoute(
        prefix=raw["prefix"],
        protocol=match["proto"],
        kind=match["kind"],
        source=match["source"],
        primary=match["primary"] is not None,
        preference=int(match["pref"]),
        next_hop=ipaddress.ip_address(next_hop[0]) if next_hop else None,
        gateways=tuple(raw["gateways"]),
        med=int(attrs["BGP.med"]) if "BGP.med" in attrs else None,
        local_pref=int(attrs["BGP.local_pref"]) if "BGP.local_pref" in attrs else None,
        as_path=tuple(int(asn) for asn in attrs.get("BGP.as_path", "").split() if asn.isdigit()),
        communities=tuple(f"{a}:{b}" for a, b in _PAIR.findall(attrs.get("BGP.community", ""))),
        large_communities=tuple(f"{a}:{b}:{c}" for a, b, c in _TRIPLE.findall(attrs.get("BGP.large_community", ""))),
        attributes=dict(attrs),
    )


def _family(address: IpAddress) -> str:
    return "ipv4" if address.version == 4 else "ipv6"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
