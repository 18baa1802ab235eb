"""A restart in a lab, with real traffic: a restart stop leaves the program forwarding with no daemon at all, and
the next run lets it forward until it is ready, then swaps its own in; no request fails on the way."""

import threading
import time
from pathlib import Path

import pytest

from balancer.lab.netns import Host, Lab
from bpf import _xdp_programs
import config
from tests.balancer.daemon_thread import DaemonThread
from tests.e2e import traffic
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


def _world(lab: Lab, tmp_path: Path) -> tuple[Host, Host, list[Host], Path]:
    """A client, the balancer and two backends on one segment, and the balancer's config."""
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
    return client, lb, backends, path


def test_a_restart_loses_no_request(lab: Lab, tmp_path: Path) -> None:
    client, lb, backends, path = _world(lab, tmp_path)
    state = tmp_path / "overrides.json"  # the drain below holds for the next run too
    first = DaemonThread(lb, path, start_grace=20.0, drain_seconds=0.2, state_file=state)
    first.start()
    assert first.daemon is not None and first.daemon.dataplane is not None
    first_prog = first.daemon.dataplane.prog_id
    _wait(
        "both backends active",
        lambda: [b.dataplane for b in first.snapshot().services[0].backends] == ["active", "active"],
    )
    first.call(lambda d: d.set_admin(f"web/{backends[0].ipv4}", config.AdminState.DRAINED))  # kept by the next run
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
        second = DaemonThread(lb, path, start_grace=20.0, drain_seconds=0.2, state_file=state)
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
    assert all(b.packets >= packets[b.address] for b in after.services[0].backends), (before, after)
    assert after.services[0].backends[1].packets > packets[after.services[0].backends[1].address] > 100
    assert prober.failures == [] and prober.slowest < 0.8, (prober.failures[:3], prober.slowest)
    assert served_alone > 10 and len(prober.outcomes) > served_alone + 20
    assert set(prober.outcomes) == {"b2"}, "b1 is drained, in both runs: new connections avoid it"
    with lb.entered():
        assert _xdp_programs.attached(lb.ifname) is None, "a full stop detaches"


def test_a_drained_backends_connection_survives_a_restart(lab: Lab, tmp_path: Path) -> None:
    """A long-lived connection on b1, which is then drained, stays there by its flow-table entry alone: Maglev no
    longer picks b1. The next run carries that entry over (in its own slot numbering and index seed), so the
    connection goes on; without it, its packets would go to b2."""
    client, lb, backends, path = _world(lab, tmp_path)
    state = tmp_path / "overrides.json"
    first = DaemonThread(lb, path, start_grace=20.0, drain_seconds=0.2, state_file=state)
    first.start()
    _wait(
        "both backends active",
        lambda: [b.dataplane for b in first.snapshot().services[0].backends] == ["active", "active"],
    )
    (stream,) = traffic.open_streams(client, VIP, 25, want=["b1"]).values()
    first.call(lambda d: d.set_admin(f"web/{backends[0].ipv4}", config.AdminState.DRAINED))
    lines: list[bytes] = []
    failure: list[OSError] = []

    def read() -> None:
        stream.sock.settimeout(15)
        try:
            while chunk := stream.sock.recv(4096):
                lines.extend(chunk.splitlines())
        except OSError as error:
            failure.append(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(2.0)
    assert first.loop is not None and first.daemon is not None
    first.loop.call_soon_threadsafe(first.daemon.restart_stop)
    first.stop()
    second = DaemonThread(lb, path, start_grace=20.0, drain_seconds=0.2, state_file=state)
    second.start()
    try:
        assert _get(client, VIP) == "b2", "b1 stays drained"
        reader.join(40)
    finally:
        second.stop()
    assert failure == [] and lines[-1] == b"b1 249", (failure, lines[-3:])
    assert [int(line.split()[1]) for line in lines] == list(range(1, 250)), "every line, in order, from b1"
