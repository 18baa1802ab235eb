"""Restarts under load: ``make bench-restart``.

The demo lab (BIRD as the router, one xdplb node, three backends) with ``bgp.graceful_restart`` on. A client opens
about 200 new connections a second (one GET each) and holds 50 long-lived keep-alive connections that send a
request every 100 ms. Three ways of restarting the node are measured in one run, one after the other:

1. ``restart``: a restart stop (SIGUSR2) and a new start;
2. ``upgrade``: the same, with a program that differs (the new run is built with ``answer_ping`` flipped: another
   program, the same maps);
3. ``abi_change``: the same, with the earlier program's ``abi`` map rewritten to another ABI, as a program built
   from another ``XDPLB_ABI`` would hold: the new run carries nothing over (fresh counters, an empty flow table)
   and swaps in all the same;
4. ``full``: SIGTERM (withdraw, drain, detach) and a new start: the baseline.

For each: the seconds from the stop to the new run being ready, the new connections that failed or waited on a
retransmitted SYN (over 0.5 s), the long-lived connections broken, the longest stretch with failures, and how long
BIRD had no route to the VIP through the node (polled every 100 ms). The last line is one JSON object, its keys
``<scenario>_<figure>`` (``restart_new_failed``, ``full_established_broken``, ...).
"""

import argparse
import ctypes
import json
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from balancer.lab import demo_lab
from balancer.lab.demo_lab import DemoLab
from balancer.lab.netns import Host
from bpf import _abi, _xdp_programs

VIP = "192.0.2.100"
SLOW = 0.5  # seconds: a connection this slow lost its SYN (the first retransmission comes after 1 s)


@dataclass
class Figures:
    seconds_to_ready: float = 0.0
    new_connections: int = 0
    new_failed: int = 0
    new_slow: int = 0
    long_lived: int = 0
    established_broken: int = 0
    failing_seconds: float = 0.0  # first to last failure
    route_absent_ms: int = 0
    failures_at: list[float] = field(default_factory=list, repr=False)


class Load:
    """The client: new connections at ``rate`` a second and ``held`` keep-alive connections, each in threads of
    its own; every loop is bounded by ``max_seconds``."""

    def __init__(self, client: Host, *, rate: float, held: int, max_seconds: float) -> None:
        self.client = client
        self.rate = rate
        self.held = held
        self.deadline = time.monotonic() + max_seconds
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.events: list[tuple[float, str]] = []  # (when, "ok" | "slow" | "failed" | "broken")
        self.threads = [threading.Thread(target=self._new_connections, args=(i,), daemon=True) for i in range(8)]
        self.threads += [threading.Thread(target=self._held, daemon=True) for _ in range(held)]

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(5)

    def _note(self, what: str) -> None:
        with self.lock:
            self.events.append((time.monotonic(), what))

    def _socket(self) -> socket.socket:
        with self.client.entered():
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    def _new_connections(self, index: int) -> None:
        every = 8 / self.rate  # 8 threads share the rate
        next_at = time.monotonic() + index * every / 8
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            self.stop.wait(max(0.0, next_at - time.monotonic()))
            next_at += every
            started = time.monotonic()
            sock = self._socket()
            try:
                sock.settimeout(3.0)
                sock.connect((VIP, 80))
                sock.sendall(f"GET / HTTP/1.0\r\nHost: {VIP}\r\n\r\n".encode())
                data = b""
                while chunk := sock.recv(4096):
                    data += chunk
                ok = data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.0 200")
            except OSError:
                ok = False
            finally:
                sock.close()
            seconds = time.monotonic() - started
            self._note("failed" if not ok else "slow" if seconds > SLOW else "ok")

    def _held(self) -> None:
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            sock = self._socket()
            try:
                sock.settimeout(3.0)
                sock.connect((VIP, 80))
                request = f"GET / HTTP/1.1\r\nHost: {VIP}\r\n\r\n".encode()
                buffer = b""
                while not self.stop.is_set() and time.monotonic() < self.deadline:
                    sock.sendall(request)
                    buffer = _read_response(sock, buffer)
                    self.stop.wait(0.1)
                self._note("held")
            except OSError:
                self._note("broken")
            finally:
                sock.close()


def _read_response(sock: socket.socket, buffer: bytes) -> bytes:
    """Read one response with a Content-Length; return what followed it. OSError if the connection ends."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionResetError("closed")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(rest) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionResetError("closed")
        rest += chunk
    return rest[length:]


class RouteWatch:
    """Polls BIRD every 100 ms, in a thread, for the VIP's route through the node; sums the time it was missing."""

    def __init__(self, demo: DemoLab, max_seconds: float) -> None:
        self.demo = demo
        self.absent = 0.0
        self.stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = time.monotonic()
        while not self.stop.is_set() and time.monotonic() < self._deadline:
            present = demo_lab.NODE_IPS[0] in self.demo.announced_by(VIP)
            now = time.monotonic()
            if not present:
                self.absent += now - last
            last = now
            self.stop.wait(0.1)

    def __enter__(self) -> "RouteWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(5)


def _set_left_programs_abi(host: Host, abi: int) -> None:
    """Write ``abi`` into the ``abi`` map of the program the stopped node left on its interface."""
    with host.entered():
        found = _xdp_programs.attached(host.ifname)
        assert found is not None, "a restart stop leaves the program attached"
        maps = _xdp_programs.maps_of(found[1])
        try:
            _xdp_programs.write_raw(maps["abi"], bytes(4), bytes(ctypes.c_uint32(abi)))
        finally:
            for fd in maps.values():
                os.close(fd)


def _scenario(demo: DemoLab, data: dict[str, Any], how: str, *, rate: float, held: int) -> Figures:
    node = demo.processes[0]
    assert node is not None
    with RouteWatch(demo, max_seconds=120) as route, Load(demo.client, rate=rate, held=held, max_seconds=120) as load:
        time.sleep(2.0)
        stopped = time.monotonic()
        node.process.send_signal(signal.SIGTERM if how == "full" else signal.SIGUSR2)
        node.process.wait(30)
        new_data = data
        if how == "upgrade":
            new_data = {
                **data,
                "dataplane": {**data["dataplane"], "answer_ping": not data["dataplane"].get("answer_ping", True)},
            }
        if how == "abi_change":
            _set_left_programs_abi(demo.nodes[0], _abi.ABI + 1)
        logged_before = len(node.log())  # the log file is appended to by every run
        node = demo.start_node(0, data=new_data, drain_seconds=0.5)
        node.wait_ready(90)
        ready = time.monotonic() - stopped
        carried = {"full": None, "abi_change": "reason=another_abi"}.get(how, "event=state_inherited")
        if carried is not None and carried not in node.log()[logged_before:]:
            raise AssertionError(f"{how}: the new run's log has no {carried}")
        _wait(lambda: demo.announced_by(VIP) == {demo_lab.NODE_IPS[0]}, 30)
        time.sleep(3.0)
        load.stop.set()
    for thread in load.threads:
        thread.join(5)
    events = load.events
    failures = [at for at, what in events if what in ("failed", "slow", "broken")]
    return Figures(
        seconds_to_ready=round(ready, 1),
        new_connections=sum(1 for _, what in events if what in ("ok", "slow", "failed")),
        new_failed=sum(1 for _, what in events if what == "failed"),
        new_slow=sum(1 for _, what in events if what == "slow"),
        long_lived=held,
        established_broken=sum(1 for _, what in events if what == "broken"),
        failing_seconds=round(max(failures) - min(failures), 2) if failures else 0.0,
        route_absent_ms=round(route.absent * 1000),
    )


def _wait(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="new connections per second")
    parser.add_argument("--held", type=int, default=50, help="long-lived connections")
    args = parser.parse_args()
    results: dict[str, Figures] = {}
    with DemoLab(nodes=1, backends=3) as demo:
        data = demo.node_config(0)
        data["bgp"]["graceful_restart"] = {"restart_time": 60}
        data.setdefault("dataplane", {})["flow_table_size"] = 4096
        node = demo.start_node(0, data=data, drain_seconds=0.5)
        node.wait_ready(90)
        _wait(lambda: demo.announced_by(VIP) == {demo_lab.NODE_IPS[0]}, 30)
        for how in ("restart", "upgrade", "abi_change", "full"):
            print(f"measuring {how} ...", file=sys.stderr, flush=True)
            results[how] = _scenario(demo, data, how, rate=args.rate, held=args.held)
        final = demo.processes[0]
        if final is not None:
            final.stop()
    names = list(asdict(Figures()))[:-1]
    print(f"{'':20}" + "".join(f"{how:>12}" for how in results))
    for name in names:
        print(f"{name:20}" + "".join(f"{getattr(figures, name):>12}" for figures in results.values()))
    print(json.dumps({f"{how}_{name}": getattr(figures, name) for how, figures in results.items() for name in names}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
