"""The real daemon in namespaces: real XDP data plane, real HTTP backends, real ExaBGP and a BIRD router.

One lab, one story: start (nothing announced until health is known), traffic spreads, a backend dies, another is
drained through the admin call while a connection to it stays open, reloads (good and broken), stop.
"""

import http.client
import ipaddress
import json
import os
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

import bpf
import config
from balancer import daemon
from balancer.lab import http_backend
from balancer.lab.bird_lab import BirdLab, BirdPeer
from balancer.lab.netns import Host, Lab
from tests.balancer.daemon_thread import DaemonThread

pytestmark = pytest.mark.privileged

VIP, VIP2 = "192.0.2.100", "192.0.2.101"
LOCAL_AS, ROUTER_AS = 65001, 65000


def _get(client: Host, vip: str, path: str = "/") -> str:
    with client.entered():
        conn = http.client.HTTPConnection(vip, 80, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            assert response.status == 200
            return response.read().decode().strip()
        finally:
            conn.close()


def _wait(what: str, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _config(lb: Host, router: Host | None, backends: list[Host], *, second_vip: bool = False) -> str:
    """The test's config; no ``bgp`` section without a ``router``."""
    members = "\n".join(f"      - address: {b.ipv4}" for b in backends)
    text = f"""
interfaces:
  - name: {lb.ifname}
    mode: generic
dataplane: {{flow_table_size: 4096}}
"""
    if router is not None:
        text += f"""bgp:
  local_as: {LOCAL_AS}
  router_id: {lb.ipv4}
  peers:
    - {{address: {router.ipv4}, peer_as: {ROUTER_AS}, local_address: {lb.ipv4}, hold_time: 9}}
  attributes: {{med: 50, communities: ["65001:100"]}}
"""
    text += f"""api: {{listen: "127.0.0.1:9180"}}  # inside the lb namespace
policies:
  web:
    checks:
      - {{type: http, path: /healthz, timing: {{interval: 0.3, timeout: 0.25, rise: 1, fall: 2}}}}
services:
  - name: web
    vip: {VIP}
    port: 80
    policy: web
    table_size: 1021
    backends:
{members}
"""
    if second_vip:
        text += f"""  - name: web2
    vip: {VIP2}
    port: 80
    policy: web
    table_size: 1021
    backends:
{members}
"""
    return text


def test_daemon_end_to_end(lab: Lab, tmp_path: Path) -> None:
    client = lab.add_host("client", ipv4="198.18.0.2")
    router = lab.add_host("router", ipv4="198.18.0.1")
    lb = lab.add_host("lb", ipv4="198.18.0.5")
    backends = [lab.add_host(f"b{i}", ipv4=f"198.18.0.{10 + i}") for i in (1, 2, 3)]
    servers = {}
    for host in backends:
        for vip in (VIP, VIP2):
            host.add_vip_on_loopback(vip)
        servers[host.name] = host.start_http_backend(host.name, 80)
    for vip in (VIP, VIP2):
        client.add_route(f"{vip}/32", via=lb.ipv4)
    path = tmp_path / "xdplb.yaml"
    path.write_text(_config(lb, router, backends))
    config.load_config(path)  # the test's own config is valid

    peer = BirdPeer(
        name="xdplb",
        address=ipaddress.ip_address(lb.ipv4),
        peer_as=LOCAL_AS,
        local_as=ROUTER_AS,
        local_address=ipaddress.ip_address(router.ipv4),
        multihop=False,
    )
    with BirdLab(peers=[peer], netns=router.netns, router_id=router.ipv4) as bird:
        runner = DaemonThread(lb, path, start_grace=10.0, drain_seconds=0.2, serve_api=True)
        runner.start()
        try:
            _run_story(runner, bird, client, servers, lb)
        finally:
            runner.stop()
        assert bird.route(f"{VIP}/32") is None, "a clean stop withdraws the routes"


def _api(lb: Host, path: str, *, post: bool = False) -> tuple[int, bytes]:
    """A call to the daemon's HTTP API, which listens on 127.0.0.1:9180 inside the balancer's namespace."""
    request = urllib.request.Request(f"http://127.0.0.1:9180{path}", method="POST" if post else "GET")
    with lb.entered():
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


def _checker_pids() -> list[int]:
    """This process's health-checker children."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and b"healthchecks._worker" in cmdline:
            pids.append(int(entry.name))
    return pids


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} {labels}")


def _run_story(
    runner: DaemonThread, bird: BirdLab, client: Host, servers: dict[str, http_backend.HttpBackend], lb: Host
) -> None:
    # Ready means every backend has a verdict: all three are up, and only then is the VIP announced.
    assert runner.snapshot().ready
    _wait(
        "every backend active",
        lambda: [(b.health, b.dataplane) for b in runner.snapshot().services[0].backends] == [("up", "active")] * 3,
        timeout=5,
    )
    _wait("the VIP in BIRD", lambda: bird.route(f"{VIP}/32") is not None)
    route = bird.route(f"{VIP}/32")
    assert route is not None and (route.med, route.communities) == (50, ("65001:100",))

    answers = Counter(_get(client, VIP) for _ in range(30))
    assert set(answers) == {"b1", "b2", "b3"}, answers
    code, body = _api(lb, "/api/v1/status")
    assert code == 200
    reported = json.loads(body)
    new_flows = {b["address"]: b["new_flows"] for b in reported["services"][0]["backends"]}
    assert new_flows == {f"198.18.0.1{i}": answers[f"b{i}"] for i in (1, 2, 3)}, "one SYN per request, per backend"
    assert reported["vips"][0]["announced"] and reported["peers"][0]["state"] == "established"
    code, body = _api(lb, "/metrics")
    metrics = body.decode()
    assert _metric(metrics, "xdplb_vip_announced", vip=VIP) == 1
    assert _metric(metrics, "xdplb_backend_new_flows_total", backend="198.18.0.12") == answers["b2"]
    assert _metric(metrics, "xdplb_bgp_session_up", peer="198.18.0.1") == 1
    assert _metric(metrics, "xdplb_healthcheck_duration_seconds_count", service="web", check="http") >= 1
    assert _metric(metrics, "xdplb_healthcheck_failures_total", backend="198.18.0.11", check="http") >= 0

    # The checker process dies: it is restarted and counted, and no backend changes state meanwhile.
    before = [(b.health, b.since) for b in runner.snapshot().services[0].backends]
    checkers = _checker_pids()
    assert checkers, "the daemon checks in worker processes"
    os.kill(checkers[0], signal.SIGKILL)
    _wait(
        "the checker restarted",
        lambda: _metric(_api(lb, "/metrics")[1].decode(), "xdplb_healthcheck_worker_restarts_total") == 1,
        timeout=10,
    )
    _wait("checks running again", lambda: set(_checker_pids()) - set(checkers) != set(), timeout=10)
    time.sleep(1.0)  # some checks of the new process have run
    assert [(b.health, b.since) for b in runner.snapshot().services[0].backends] == before
    assert bird.route(f"{VIP}/32") is not None

    # b3's server dies: down within fall x interval + timeout + margin, and its share goes to the others.
    servers["b3"].stop()
    _wait(
        "b3 down and out of the data plane (the next pass, tens of ms after the verdict)",
        lambda: runner.snapshot().services[0].backends[2].dataplane == "removed: down",
        timeout=5,
    )
    b3 = runner.snapshot().services[0].backends[2]
    assert b3.dataplane == "removed: down" and "refused" in b3.reason, b3
    assert set(_get(client, VIP) for _ in range(20)) == {"b1", "b2"}

    # Drain b1 through the admin call while a connection to b1 is open: it completes, new ones avoid b1.
    conn, response, first = _open_stream_to(client, "b1")
    assert _api(lb, "/api/v1/backends/web/198.18.0.11/drain", post=True)[0] == 200
    b1 = runner.snapshot().services[0].backends[0]
    assert (b1.admin, b1.admin_override, b1.dataplane, b1.table_entries) == (
        "drained",
        "drained",
        "draining (weight 0)",
        0,
    )
    assert set(_get(client, VIP) for _ in range(20)) == {"b2"}
    assert runner.call(_slots_in_kernel_table) == {"198.18.0.12"}, "the kernel's Maglev table holds b2 only"
    with client.entered():
        streamed = first + response.read().decode()
        conn.close()
    assert streamed.count("\n") >= 5 and streamed.startswith("b1"), "the drained backend's open connection completed"
    assert _api(lb, "/api/v1/backends/web/198.18.0.11/reset", post=True)[0] == 200
    assert runner.snapshot().services[0].backends[0].admin_override is None
    assert _api(lb, "/api/v1/backends/web/198.18.0.99/drain", post=True)[0] == 404

    # A reload adding a second VIP: forwarded and announced; unchanged backends keep their state.
    since_before = runner.snapshot().services[0].backends[1].since
    path = runner.config_path
    path.write_text(_config_with_second_vip(path.read_text()))
    code, body = _api(lb, "/api/v1/reload", post=True)
    assert code == 200 and "service web2 added" in body.decode(), body
    _wait("the second VIP in BIRD", lambda: bird.route(f"{VIP2}/32") is not None)
    assert set(_get(client, VIP2) for _ in range(20)) <= {"b1", "b2"}
    assert runner.snapshot().services[0].backends[1].since == since_before

    # A broken config is rejected with the reason; the running one stays and traffic is unaffected.
    digest = runner.snapshot().config_digest
    good = path.read_text()
    path.write_text(good.replace("port: 80", "port: 80000", 1))
    code, body = _api(lb, "/api/v1/reload", post=True)
    assert code == 400 and "services[0].port" in body.decode(), body
    snap = runner.snapshot()
    assert snap.config_digest == digest and snap.reloads == {"success": 1, "failure": 1}
    assert _get(client, VIP) in {"b1", "b2"}
    # Valid to the schema, but a check the checker cannot send: refused too, before anything changed.
    path.write_text(
        good.replace("      - {type: http,", "      - {type: dns, name: a..b, port: 53}\n      - {type: http,")
    )
    code, body = _api(lb, "/api/v1/reload", post=True)
    assert code == 400 and "a..b" in body.decode(), body
    assert runner.snapshot().config_digest == digest

    # Every backend down: the route goes from BIRD; one back: it returns.
    servers["b1"].stop()
    servers["b2"].stop()
    _wait("the VIP withdrawn", lambda: bird.route(f"{VIP}/32") is None, timeout=5)
    vip = next(v for v in runner.snapshot().vips if v.vip == VIP)
    assert not vip.announced and "0 of 1" in vip.reason


async def _slots_in_kernel_table(d: daemon.Daemon) -> set[str]:
    """Backend addresses in the live Maglev table of VIP:80/tcp, read from the kernel maps."""
    assert d.dataplane is not None
    return {str(a) for a in d.dataplane.read_table(bpf.ServiceKey(ipaddress.ip_address(VIP), 80, "tcp"))}


def _config_with_second_vip(text: str) -> str:
    web = text[text.index("  - name: web\n") :]
    return text + web.replace("  - name: web\n", "  - name: web2\n").replace(f"vip: {VIP}", f"vip: {VIP2}")


def _open_stream_to(client: Host, backend: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, str]:
    """A streaming request that landed on ``backend``, its first line read (tries new connections until one does)."""
    for _ in range(50):
        with client.entered():
            conn = http.client.HTTPConnection(VIP, 80, timeout=10)
            conn.request("GET", "/stream?seconds=1")
            response = conn.getresponse()
            first = response.readline().decode()
            if first.startswith(backend):
                return conn, response, first
            conn.close()
    raise AssertionError(f"no connection landed on {backend}")


def two_backends(lab: Lab, path: Path) -> tuple[Host, Host, list[Host]]:
    """A client, a balancer and two HTTP backends (b1, b2) holding VIP, without BGP; the config written at
    ``path``: (client, lb, backends)."""
    client = lab.add_host("client", ipv4="198.18.0.2")
    lb = lab.add_host("lb", ipv4="198.18.0.5")
    backends = [lab.add_host(f"b{i}", ipv4=f"198.18.0.{10 + i}") for i in (1, 2)]
    for host in backends:
        host.add_vip_on_loopback(VIP)
        host.start_http_backend(host.name, 80)
    client.add_route(f"{VIP}/32", via=lb.ipv4)
    path.write_text(_config(lb, None, backends))
    return client, lb, backends


def test_admin_overrides_survive_a_restart(lab: Lab, tmp_path: Path) -> None:
    path = tmp_path / "xdplb.yaml"
    client, lb, backends = two_backends(lab, path)
    state = tmp_path / "overrides.json"

    first = DaemonThread(lb, path, start_grace=10.0, drain_seconds=0, serve_api=True, state_file=state)
    first.start()
    try:
        assert _api(lb, "/api/v1/backends/web/198.18.0.11/drain", post=True)[0] == 200
    finally:
        first.stop()
    second = DaemonThread(lb, path, start_grace=10.0, drain_seconds=0, serve_api=True, state_file=state)
    second.start()
    try:
        b1 = second.snapshot().services[0].backends[0]
        assert (b1.admin, b1.admin_override) == ("drained", "drained"), "the drain outlived the restart"
        _wait("b2 active", lambda: second.snapshot().services[0].backends[1].dataplane == "active", timeout=5)
        assert {_get(client, VIP) for _ in range(10)} == {"b2"}
    finally:
        second.stop()
