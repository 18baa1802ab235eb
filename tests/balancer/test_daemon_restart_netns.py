"""A restart in a lab, with real traffic: a restart stop leaves the program forwarding with no daemon at all, and
the next run lets it forward until it is ready, then swaps its own in; no request fails on the way."""

import threading
import time
from pathlib import Path

import pytest

from balancer.lab.netns import Host, Lab
from bpf import _xdp_programs
from tests.balancer.daemon_thread import DaemonThread
from tests.balancer.test_daemon_netns import VIP, _get, _wait

pytestmark = pytest.mark.privileged


class _Prober:
    """GETs the VIP from the client every 50 ms in a thread, each on a new connection, and keeps the outcomes."""

    def __init__(self, client: Host) -> None:
        self.client = client
        self.outcomes: list[str] = []
        self.slowest = 0.0  # seconds: a dropped SYN shows as a 1 s retransmission
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 120  # bounded, whatever the test does
        while not self._stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            try:
                self.outcomes.append(_get(self.client, VIP))
                self.slowest = max(self.slowest, time.monotonic() - started)
            except Exception as error:  # noqa: BLE001 - every failure is an outcome to report
                self.outcomes.append(f"failed: {error!r}")
            time.sleep(0.05)

    def __enter__(self) -> "_Prober":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    @property
    def failures(self) -> list[str]:
        return [outcome for outcome in self.outcomes if outcome.startswith("failed")]


def test_a_restart_loses_no_request(lab: Lab, tmp_path: Path) -> None:
    client = lab.add_host("client", ipv4="198.18.0.2")
    lb = lab.add_host("lb", ipv4="198.18.0.5")
    backends = [lab.add_host(f"b{i}", ipv4=f"198.18.0.1{i}") for i in (1, 2)]
    for host in backends:
        host.add_vip_on_loopback(VIP)
        host.start_http_backend(host.name, 80)
    client.add_route(f"{VIP}/32", via=lb.ipv4)
    path = tmp_path / "xdplb.yaml"
    members = "\n".join(f"      - {host.ipv4}" for host in backends)
    # rise 3 at 0.5 s: the next run needs a second and more before its first verdicts, after compiling.
    path.write_text(f"""
interfaces: [{{name: {lb.ifname}, mode: generic}}]
dataplane: {{flow_table_size: 4096}}
api: {{listen: "127.0.0.1:9180"}}
services:
  - name: web
    vip: {VIP}
    port: 80
    table_size: 1021
    checks: [{{type: http, path: /healthz, timing: {{interval: 0.5, timeout: 0.4, rise: 3, fall: 2}}}}]
    backends:
{members}
""")
    first = DaemonThread(lb, path, start_grace=20.0, drain_seconds=0.2)
    first.start()
    assert first.daemon is not None and first.daemon.dataplane is not None
    first_prog = first.daemon.dataplane.prog_id
    _wait("both backends active", lambda: [b.dataplane for b in first.snapshot().services[0].backends]
          == ["active", "active"])
    with _Prober(client) as prober:
        time.sleep(0.5)
        assert first.loop is not None
        for _ in range(150):  # counts the new run's own traffic, a second of the prober's, could not reach
            _get(client, VIP)
        before = first.snapshot()  # a little less than the program will have counted at the stop
        first.loop.call_soon_threadsafe(first.daemon.restart_stop)
        first.stop()
        with lb.entered():
            assert _xdp_programs.attached(lb.ifname) == ("generic", first_prog), "left attached"
        time.sleep(1.0)  # no daemon at all: the program forwards alone
        served_alone = len(prober.outcomes)
        second = DaemonThread(lb, path, start_grace=20.0, drain_seconds=0.2)
        second.start()
        try:
            assert second.daemon is not None and second.daemon.dataplane is not None
            with lb.entered():
                assert _xdp_programs.attached(lb.ifname) == ("generic", second.daemon.dataplane.prog_id)
            time.sleep(1.0)
            after = second.snapshot()
            drops = after.totals["drop_no_backend"]
        finally:
            prober.__exit__()
            second.stop()
    assert drops == 0, "the new program saw traffic before its services were written"
    # The counters carry on: the new program's start from the earlier one's (which only grew since `before`).
    assert after.totals["rx_packets"] > before.totals["rx_packets"] > 500
    assert after.services[0].packets > before.services[0].packets
    packets = {b.address: b.packets for b in before.services[0].backends}
    assert all(b.packets > packets[b.address] > 100 for b in after.services[0].backends), (before, after)
    assert prober.failures == [] and prober.slowest < 0.8, (prober.failures[:3], prober.slowest)
    assert served_alone > 10 and len(prober.outcomes) > served_alone + 20
    assert set(prober.outcomes) == {"b1", "b2"}
    with lb.entered():
        assert _xdp_programs.attached(lb.ifname) is None, "a full stop detaches"
