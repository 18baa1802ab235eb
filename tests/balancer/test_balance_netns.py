"""``xdplb balance`` in the namespace lab: the verb runs in the balancer's namespace against three lab backends,
a client's requests to the VIP spread over them, the status line shows it, Ctrl-C stops it and XDP is detached."""

import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from balancer.lab.netns import Lab
from tests.balancer.test_daemon_netns import VIP, _get
from tests.balancer.test_link_reattach_netns import _xdp

pytestmark = pytest.mark.privileged

ROOT = Path(__file__).resolve().parents[2]


class Lines:
    """A process's stdout, line by line, read in a thread (so a wait can time out)."""

    def __init__(self, stream: "subprocess.IO[str]") -> None:  # type: ignore[name-defined]
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: "subprocess.IO[str]") -> None:  # type: ignore[name-defined]
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} in {timeout} s; output:\n" + "\n".join(self.seen))
            if line is None:
                raise AssertionError(f"the output ended before {pattern!r}:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if re.search(pattern, line):
                return line


def test_balance_one_line(lab: Lab) -> None:
    client = lab.add_host("client", ipv4="198.18.0.2")
    lb = lab.add_host("lb", ipv4="198.18.0.5")
    backends = [lab.add_host(f"b{i}", ipv4=f"198.18.0.{10 + i}") for i in (1, 2, 3)]
    for host in backends:
        host.add_vip_on_loopback(VIP)
        host.start_http_backend(host.name, 80)
    client.add_route(f"{VIP}/32", via=lb.ipv4)

    argv = [
        sys.executable,
        "-m",
        "balancer.cli",
        "balance",
        lb.ifname,
        VIP,
        *(b.ipv4 for b in backends),
        "--check",
        "http",
        "--mode",
        "generic",
        "--log-level",
        "INFO",
    ]
    stderr = tempfile.TemporaryFile(mode="w+")
    proc = lb.popen(
        argv, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    try:
        assert proc.stdout is not None
        lines = Lines(proc.stdout)
        lines.wait_for(r"backends up 3/3 \(198\.18\.0\.11 198\.18\.0\.12 198\.18\.0\.13\)", timeout=60)
        assert _xdp(lb).keys() == {"generic"}

        answers = Counter(_get(client, VIP) for _ in range(60))
        assert set(answers) == {"b1", "b2", "b3"}, answers
        line = lines.wait_for(r"[1-9]\d* new flows/s", timeout=10)
        assert f"XDP {lb.ifname} generic" in line

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(30) == 0
        lines.wait_for(rf"stopped; XDP detached from {lb.ifname}", timeout=5)
        print("\n" + "\n".join(lines.seen))  # what the user sees (-s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        stderr.seek(0)
        log = stderr.read()
    assert _xdp(lb) == {}, "Ctrl-C detached XDP"
    assert "event=xdp_attached" in log and "event=stopped errors=0" in log, log[-3000:]
