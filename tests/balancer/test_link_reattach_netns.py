"""NIC resets in the namespace lab, with the real daemon: XDP detached behind its back, replaced by another program,
the veth deleted and re-created, renamed away and back. Each time the program is back within a second and traffic
to the VIP flows again; both gaps are measured (``-s`` prints them)."""

import ctypes
import ctypes.util
import http.client
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from balancer.lab.netns import Host, Lab
from tests.balancer.daemon_thread import DaemonThread
from tests.balancer.test_daemon_netns import VIP, two_backends

pytestmark = pytest.mark.privileged

REATTACH_WITHIN = 1.0  # seconds: the bound
PROBE_TIMEOUT = 0.1  # seconds one request to the VIP may take: the gap's resolution
_XDP_FLAGS_SKB_MODE = 1 << 1


def _xdp(host: Host) -> dict[str, int]:
    """The XDP programs on ``host``'s veth, by mode, as the kernel reports them (empty: none, or no such veth)."""
    with host.ipr() as ipr:
        found = ipr.link_lookup(ifname=host.ifname)
        if not found:
            return {}
        nested = ipr.get_links(found[0])[0].get_attr("IFLA_XDP")
    ids = {"IFLA_XDP_DRV_PROG_ID": "native", "IFLA_XDP_SKB_PROG_ID": "generic"}
    return {mode: nested.get_attr(attr) for attr, mode in ids.items() if nested is not None and nested.get_attr(attr)}


def _wait_for(what: str, predicate: Callable[[], bool], timeout: float, poll: float = 0.005) -> float:
    """Seconds until ``predicate()`` held; AssertionError after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)
    return time.monotonic() - started


class Prober:
    """Requests to the VIP from ``client``, one after the other (each on a new connection), recording results."""

    def __init__(self, client: Host) -> None:
        self.client = client
        self.results: list[tuple[float, float, bool]] = []  # (started, ended, ok), monotonic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Prober":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        with self.client.entered():
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    conn = http.client.HTTPConnection(VIP, 80, timeout=PROBE_TIMEOUT)
                    conn.request("GET", "/")
                    ok = conn.getresponse().status == 200
                    conn.close()
                except OSError:
                    ok = False
                self.results.append((started, time.monotonic(), ok))
                if not ok:
                    time.sleep(0.01)

    def gap_after(self, t0: float, timeout: float) -> float:
        """Seconds from ``t0`` until requests succeed again: the start of the first success after ``t0`` that no
        failure follows (0 when none failed). Waits until one success has followed the last failure."""
        deadline = time.monotonic() + timeout
        while True:
            after = [r for r in self.results if r[0] >= t0 or r[1] >= t0]
            failed = [r for r in after if not r[2]]
            since = failed[-1][1] if failed else t0
            good = [r for r in after if r[2] and r[0] >= since]
            if len(good) >= 3:
                return max(0.0, good[0][0] - t0) if failed else 0.0
            if time.monotonic() > deadline:
                raise AssertionError(f"traffic did not come back within {timeout} s: {after[-5:]}")
            time.sleep(0.05)


@dataclass
class Measured:
    what: str
    reattach: float
    traffic_gap: float


def test_xdp_comes_back_after_nic_resets(lab: Lab, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="balancer.link_reattach")
    path = tmp_path / "xdplb.yaml"
    client, lb, backends = two_backends(lab, path)
    runner = DaemonThread(lb, path, start_grace=10.0, drain_seconds=0)
    runner.start()
    measured: list[Measured] = []
    try:
        _wait_for(
            "both backends active",
            lambda: [b.dataplane for b in runner.snapshot().services[0].backends] == ["active"] * 2,
            timeout=10,
            poll=0.05,
        )
        ours = _xdp(lb)["generic"]
        with Prober(client) as prober:
            _wait_for("traffic through the VIP", lambda: any(ok for _, _, ok in prober.results), timeout=5)
            measured.append(_detached(lb, prober, ours))
            measured.append(_replaced(lb, prober, ours))
            measured.append(_recreated(lab, lb, prober, ours))
            measured.append(_renamed(lb, prober, ours))
        counts = runner.snapshot().xdp_reattaches
        assert counts == {lb.ifname: {"xdp_missing": 1, "xdp_replaced": 1, "recreated": 1, "renamed": 1}}, counts
    finally:
        runner.stop()
    assert _xdp(lb) == {}, "a clean stop detaches XDP from the re-created veth"
    daemon_side = [float(line.rsplit("=", 1)[1]) for line in caplog.messages if "event=xdp_reattached" in line]
    assert len(daemon_side) == 4 and max(daemon_side) < REATTACH_WITHIN
    for m, seconds in zip(measured, daemon_side, strict=True):
        print(
            f"\n{m.what}: XDP back {m.reattach * 1000:.0f} ms after the change began "
            f"({seconds * 1000:.0f} ms after the daemon saw it); requests answered again after "
            f"{m.traffic_gap * 1000:.0f} ms (resolution: the {PROBE_TIMEOUT * 1000:.0f} ms request timeout)"
        )


def _detached(lb: Host, prober: Prober, ours: int) -> Measured:
    t0 = time.monotonic()
    lb.run(["ip", "link", "set", "dev", lb.ifname, "xdpgeneric", "off"])
    back = _wait_for("XDP attached again", lambda: _xdp(lb).get("generic") == ours, timeout=REATTACH_WITHIN)
    return Measured("detached (ip link set xdpgeneric off)", back, prober.gap_after(t0, timeout=5))


def _replaced(lb: Host, prober: Prober, ours: int) -> Measured:
    fd = _load_xdp_pass()
    try:
        t0 = time.monotonic()
        with lb.ipr() as ipr:
            index = ipr.link_lookup(ifname=lb.ifname)[0]
            ipr.link("set", index=index, xdp={"attrs": [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", _XDP_FLAGS_SKB_MODE)]})
        back = _wait_for("ours in place of theirs", lambda: _xdp(lb).get("generic") == ours, timeout=REATTACH_WITHIN)
    finally:
        os.close(fd)
    return Measured("replaced by another program (XDP_PASS)", back, prober.gap_after(t0, timeout=5))


def _recreated(lab: Lab, lb: Host, prober: Prober, ours: int) -> Measured:
    before = lb.ifindex
    lab.replug("lb", down=0.2)  # deleted, 200 ms without it, made again: same name and MAC, a new ifindex
    t0 = time.monotonic()
    assert lb.ifindex != before
    back = _wait_for("XDP on the re-created veth", lambda: _xdp(lb).get("generic") == ours, timeout=REATTACH_WITHIN)
    return Measured("veth deleted and re-created", back, prober.gap_after(t0, timeout=10))


def _renamed(lb: Host, prober: Prober, ours: int) -> Measured:
    other = lb.ifname + "r"
    lb.run(["ip", "link", "set", "dev", lb.ifname, "down"])
    lb.run(["ip", "link", "set", "dev", lb.ifname, "name", other])

    def released() -> bool:
        with lb.ipr() as ipr:
            nested = ipr.get_links(ipr.link_lookup(ifname=other)[0])[0].get_attr("IFLA_XDP")
        return nested is None or not nested.get_attr("IFLA_XDP_SKB_PROG_ID")

    _wait_for("the program detached from the renamed veth", released, timeout=REATTACH_WITHIN)
    lb.run(["ip", "link", "set", "dev", other, "name", lb.ifname])
    lb.run(["ip", "link", "set", "dev", lb.ifname, "up"])
    t0 = time.monotonic()
    back = _wait_for("XDP on the veth renamed back", lambda: _xdp(lb).get("generic") == ours, timeout=REATTACH_WITHIN)
    return Measured("renamed away and back (down, up)", back, prober.gap_after(t0, timeout=10))


def _load_xdp_pass() -> int:
    """Someone else's XDP program: ``r0 = XDP_PASS; exit``, loaded with bpf(2) (BPF_PROG_LOAD). Returns its fd."""

    class Attr(ctypes.Structure):
        _fields_ = [
            ("prog_type", ctypes.c_uint32),
            ("insn_cnt", ctypes.c_uint32),
            ("insns", ctypes.c_uint64),
            ("license", ctypes.c_uint64),
            ("log_level", ctypes.c_uint32),
            ("log_size", ctypes.c_uint32),
            ("log_buf", ctypes.c_uint64),
            ("kern_version", ctypes.c_uint32),
            ("prog_flags", ctypes.c_uint32),
            ("pad", ctypes.c_char * 64),
        ]

    insns = bytes.fromhex("b7000000020000009500000000000000")  # mov64 r0, 2 (XDP_PASS); exit
    code = ctypes.create_string_buffer(insns, len(insns))
    license_ = ctypes.create_string_buffer(b"GPL")
    attr = Attr(prog_type=6, insn_cnt=2, insns=ctypes.addressof(code), license=ctypes.addressof(license_))
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fd = libc.syscall(321, 5, ctypes.byref(attr), ctypes.sizeof(attr))  # x86-64 bpf(2), BPF_PROG_LOAD
    if fd < 0:
        raise OSError(ctypes.get_errno(), "BPF_PROG_LOAD")
    return int(fd)
