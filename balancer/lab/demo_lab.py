"""The demo topology in namespaces, shared by ``xdplb demo`` and the end-to-end tests.

One lab bridge (``balancer.lab.netns``) joins::

    client 198.18.0.2 --VIP via--> router 198.18.0.1 (BIRD, ECMP into its own kernel)
                                      |--> xdplb node 198.18.0.5 (and .6)  -- XDP, L2 DSR -->  backends .11 .12 .13
                                      |                                   -- GUE via the router --> r1 198.18.1.21
    backends (VIP on lo, HTTP answering their name) --reply straight--> client

``routed`` backends (``xdplb demo`` has one) sit behind the router on a second segment, 198.18.1.0/24, and take
the tunnel off with ``bpf.decap``.

Each xdplb node is the real ``xdplb run`` as a child process in its namespace, with
``config/examples/demo.yaml`` rewritten for the run (interface name, addresses). Run files live in
``/run/xdplb-demo/<run-id>/``; ``cleanup_demo_leftovers()`` removes those of dead runs (and their lab namespaces).

    with DemoLab(nodes=1) as demo:
        node = demo.start_node(0)
        node.wait_ready()
        demo.bird.route("192.0.2.100/32")
"""

from __future__ import annotations

import copy
import gzip
import http.client
import ipaddress
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

import config
from balancer.lab import bird_lab, http_backend, netns, registry

__all__ = [
    "BACKEND_IPS",
    "CLIENT_IP",
    "DEMO_CONFIG",
    "NODE_IPS",
    "ROUTED_IPS",
    "ROUTER_IP",
    "WORKDIR_ROOT",
    "DemoError",
    "DemoLab",
    "NodeProcess",
    "cleanup_demo_leftovers",
]

log = logging.getLogger(__name__)

DEMO_CONFIG = Path(config.__file__).parent / "examples" / "demo.yaml"
"""The configuration every demo node runs, with the run's interface and addresses substituted."""
WORKDIR_ROOT = Path("/run/xdplb-demo")
ROUTER_IP = "198.18.0.1"
ROUTED_SUBNET = "198.18.1.0/24"  # behind the router: backends reached in a tunnel
ROUTED_GATEWAY = "198.18.1.1"  # the router there
ROUTED_IPS = ("198.18.1.21", "198.18.1.22")
CLIENT_IP = "198.18.0.2"
NODE_IPS = ("198.18.0.5", "198.18.0.6")
BACKEND_IPS = tuple(f"198.18.0.{11 + i}" for i in range(8))


class DemoError(config.XdplbError, RuntimeError):
    """The demo lab could not be built or a node misbehaved."""


class NodeProcess:
    """One ``xdplb run`` child in a node's namespace; talks to its API from inside that namespace."""

    def __init__(
        self,
        host: netns.Host,
        *,
        config_path: Path,
        log_path: Path,
        process: subprocess.Popen[Any],
        api: tuple[str, int],
    ) -> None:
        self.host = host
        self.api = api  # the API's listen address inside the node's namespace
        self.config_path = config_path
        self.log_path = log_path
        self.process = process

    @property
    def pid(self) -> int:
        """The daemon's process id (``nsenter`` execs it)."""
        return self.process.pid

    def log(self) -> str:
        """What the daemon logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def errors(self) -> list[str]:
        """Log lines at level ERROR or CRITICAL, and the first line of every traceback."""
        return [
            line
            for line in self.log().splitlines()
            if "level=error" in line or "level=critical" in line or line.startswith("Traceback")
        ]

    def request(
        self, method: str, path: str, *, timeout: float = 5.0, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """One API call; returns (HTTP status, decoded JSON or text, gunzipped if it came compressed). Raises
        OSError when nothing answers."""
        conn = http.client.HTTPConnection(*self.api, timeout=timeout)
        with self.host.entered():
            conn.connect()  # the socket belongs to the node's namespace from here on
        try:
            sent = {"Content-Length": "0"} if method == "POST" else {}
            conn.request(method, path, headers=sent | (headers or {}))
            response = conn.getresponse()
            raw = response.read()
            if response.getheader("Content-Encoding", "") == "gzip":
                raw = gzip.decompress(raw)
            body = raw.decode(errors="replace")
        finally:
            conn.close()
        if response.getheader("Content-Type", "").startswith("application/json"):
            return response.status, json.loads(body)
        return response.status, body

    def status(self) -> dict[str, Any]:
        """``GET /api/v1/status``."""
        code, body = self.request("GET", "/api/v1/status")
        if code != 200 or not isinstance(body, dict):
            raise DemoError(f"status API answered {code}: {body!r}")
        return body

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until ``/healthz`` answers 200 (data plane attached, every backend's first verdict in)."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DemoError(f"xdplb exited with {self.process.returncode}; log:\n{self.log()[-3000:]}")
            try:
                code, last = self.request("GET", "/healthz", timeout=1.0)
                if code == 200:
                    return
            except OSError as error:
                last = error
            time.sleep(0.1)
        raise DemoError(f"xdplb not ready within {timeout:g} s (last: {last!r}); log:\n{self.log()[-3000:]}")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (a clean stop: routes withdrawn, XDP detached), wait; SIGKILL after ``timeout``."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                http_backend.stop_process(self.process, 1.0)
        return self.process.wait()

    def kill(self) -> None:
        """SIGKILL the daemon alone (its ExaBGP child dies with it: PDEATHSIG)."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()


class DemoLab:
    """Client, router with BIRD, ``nodes`` xdplb node namespaces and ``backends`` web servers; see the module doc.

    ``create()`` (or ``with``) builds everything but starts no xdplb node: call ``start_node(i)``.
    """

    def __init__(
        self,
        *,
        nodes: int = 1,
        backends: int = 3,
        routed: int = 0,
        template: Path = DEMO_CONFIG,
        workdir_root: Path = WORKDIR_ROOT,
        handle_signals: bool = True,
    ) -> None:
        if (
            not 1 <= nodes <= len(NODE_IPS)
            or not 1 <= backends <= len(BACKEND_IPS)
            or not 0 <= routed <= len(ROUTED_IPS)
        ):
            raise DemoError(
                f"1-{len(NODE_IPS)} nodes, 1-{len(BACKEND_IPS)} backends and 0-{len(ROUTED_IPS)} routed ones"
            )
        self.template: dict[str, Any] = yaml.safe_load(template.read_text())
        self.lab = netns.Lab(handle_signals=handle_signals)
        self.workdir_root = workdir_root
        self.workdir = workdir_root  # set per run in create()
        self._node_count = nodes
        self._backend_count = backends
        self._routed_count = routed
        self.nodes: list[netns.Host] = []
        self.backends: list[netns.Host] = []  # on the nodes' segment: layer-2 DSR
        self.routed: list[netns.Host] = []  # behind the router, on a segment of their own: GUE
        self.servers: dict[str, http_backend.HttpBackend | None] = {}
        self.processes: list[NodeProcess | None] = [None] * nodes
        self._bird: bird_lab.BirdLab | None = None
        self._client: netns.Host | None = None
        self._router: netns.Host | None = None
        self._owner = os.getpid()

    # topology

    @property
    def vips(self) -> list[str]:
        """Every VIP of the template's services."""
        return list(dict.fromkeys(str(service["vip"]) for service in self.template["services"]))

    @property
    def local_as(self) -> int:
        return int(self.template["bgp"]["local_as"])

    @property
    def router_as(self) -> int:
        return int(self.template["bgp"]["peers"][0]["peer_as"])

    @property
    def client(self) -> netns.Host:
        if self._client is None:
            raise DemoError("call create() first")
        return self._client

    @property
    def router(self) -> netns.Host:
        if self._router is None:
            raise DemoError("call create() first")
        return self._router

    @property
    def bird(self) -> bird_lab.BirdLab:
        if self._bird is None:
            raise DemoError("call create() first")
        return self._bird

    def __enter__(self) -> DemoLab:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def create(self) -> DemoLab:
        """Build the lab; on failure undo what was done and raise."""
        try:
            self._create()
        except BaseException:
            self.destroy()
            raise
        return self

    def _create(self) -> None:
        lab = self.lab.create()
        self.workdir = self.workdir_root / lab.run_id
        self.workdir.mkdir(parents=True, exist_ok=False)  # after the lab's record: a dead run's dir is known dead
        self._router = router = lab.add_host("router", ipv4=ROUTER_IP)
        self._client = client = lab.add_host("client", ipv4=CLIENT_IP)
        self.nodes = [lab.add_host(f"lb{i + 1}", ipv4=NODE_IPS[i]) for i in range(self._node_count)]
        self.backends = [lab.add_host(f"b{i + 1}", ipv4=BACKEND_IPS[i]) for i in range(self._backend_count)]
        router.set_sysctl("net.ipv4.ip_forward", 1)
        for conf in ("all", "default", router.ifname):
            router.set_sysctl(f"net.ipv4.conf.{conf}.send_redirects", 0)  # it routes back out the same port
        for vip in self.vips:
            client.add_route(f"{vip}/32", via=ROUTER_IP)
            for backend in self.backends:
                backend.add_vip_on_loopback(vip)
        peers = [
            bird_lab.BirdPeer(
                name=f"xdplb{i + 1}",
                address=ipaddress.ip_address(node.ipv4),
                peer_as=self.local_as,
                local_as=self.router_as,
                local_address=ipaddress.ip_address(ROUTER_IP),
                multihop=False,
            )
            for i, node in enumerate(self.nodes)
        ]
        self._bird = bird_lab.BirdLab(peers=peers, netns=router.netns, router_id=ROUTER_IP, kernel_merge_paths=True)
        self._write_run_record()
        self._bird.start()
        if self._routed_count:
            self._create_routed(lab, router)
        for backend in self.all_backends:
            self.start_backend(backend.name)
        log.info("event=demo_lab_created run=%s nodes=%d backends=%d", lab.run_id, len(self.nodes), len(self.backends))

    def _create_routed(self, lab: netns.Lab, router: netns.Host) -> None:
        """A second segment behind the router with the routed backends, which take xdplb's GUE off with its decap
        program (the kernel needs no tunnel module); the nodes route there through the router and forward, as
        bpf_fib_lookup wants (in their own namespaces)."""
        from bpf import decap

        segment = lab.add_segment()
        router.add_interface(segment, ipv4=ROUTED_GATEWAY)
        self.routed = [
            lab.add_host(f"r{i + 1}", ipv4=ROUTED_IPS[i], segment=segment) for i in range(self._routed_count)
        ]
        for host in self.routed:
            host.add_route(f"{CLIENT_IP.rpartition('.')[0]}.0/24", via=ROUTED_GATEWAY)
            for vip in self.vips:
                host.add_vip_on_loopback(vip)
            with host.entered():
                decap.attach(host.ifname, mode="generic")
        for node in self.nodes:
            node.add_route(ROUTED_SUBNET, via=ROUTER_IP)
            node.set_sysctl("net.ipv4.conf.all.forwarding", 1)

    @property
    def all_backends(self) -> list[netns.Host]:
        """The layer-2 backends, then the routed ones."""
        return [*self.backends, *self.routed]

    def _write_run_record(self) -> None:
        record = {"run_id": self.lab.run_id, "bird_workdir": str(self.bird.workdir)}
        (self.workdir / "run.json").write_text(json.dumps(record) + "\n")

    def destroy(self) -> None:
        """Stop the nodes cleanly, then BIRD, then remove the namespaces and the run directory. Idempotent."""
        if os.getpid() != self._owner:
            return  # a forked child (pyroute2 forks helpers) never owns the lab
        errors: list[str] = []
        for index, node in enumerate(self.processes):
            if node is not None:
                try:
                    node.stop()
                except Exception as error:  # keep tearing down
                    errors.append(f"node {index}: {error!r}")
        self.processes = [None] * len(self.processes)
        for name, server in list(self.servers.items()):
            if server is not None:
                server.stop()
            self.servers[name] = None
        if self._bird is not None:
            self._bird.stop()
        try:
            self.lab.destroy()
        except netns.LabError as error:
            errors.append(str(error))
        if self.workdir != self.workdir_root:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise DemoError("demo lab teardown: " + "; ".join(errors))

    def add_vip(self, vip: str) -> None:
        """Make ``vip`` usable beyond the template's: on every backend's ``lo``, routed by the client via the router."""
        self.client.add_route(f"{vip}/32", via=ROUTER_IP)
        for backend in self.backends:
            backend.add_vip_on_loopback(vip)

    def add_client_addresses(self, count: int, first: int = 100) -> list[str]:
        """Give the client ``count`` more addresses (198.18.0.``first`` up), as many clients behind one port."""
        addresses = [f"198.18.0.{first + i}" for i in range(count)]
        if not addresses or first < 20 or first + count > 250:
            raise DemoError("client addresses must lie within 198.18.0.20-249")

        def add(ipr: Any) -> None:
            for address in addresses:
                ipr.addr("replace", index=self.client.ifindex, address=address, prefixlen=24)

        with self.client.ipr() as ipr:
            add(ipr)
        return addresses

    # backends

    def backend(self, name: str) -> netns.Host:
        """The backend host ``name`` (b1, b2, ..., r1, ...)."""
        for host in self.all_backends:
            if host.name == name:
                return host
        raise DemoError(f"no backend {name}")

    def start_backend(self, name: str) -> http_backend.HttpBackend:
        """Start (again) backend ``name``'s web server on port 80; returns once it answers."""
        if self.servers.get(name) is not None:
            raise DemoError(f"backend {name} is running")
        server = self.backend(name).start_http_backend(name, 80)
        self.servers[name] = server
        return server

    def stop_backend(self, name: str) -> None:
        """Stop backend ``name``'s web server (its host stays: health checks get connection refused)."""
        server = self.servers.get(name)
        if server is not None:
            server.stop()
        self.servers[name] = None

    # nodes

    def node_config(self, index: int) -> dict[str, Any]:
        """The template rewritten for node ``index``: its interface, its address as router id and BGP source, and
        the lab router as its peer."""
        node = self.nodes[index]
        data = copy.deepcopy(self.template)
        data["interfaces"][0]["name"] = node.ifname
        data["bgp"]["router_id"] = node.ipv4
        peer = data["bgp"]["peers"][0]
        peer.update(address=ROUTER_IP, local_address=node.ipv4, port=self.bird.port)
        if self.routed:  # the first service also reaches the routed backends, in GUE from this node's address
            data.setdefault("dataplane", {})["tunnel_source_v4"] = node.ipv4
            data["services"][0]["backends"] += [{"address": host.ipv4, "forwarding": "gue"} for host in self.routed]
        return data

    def write_config(self, index: int, data: dict[str, Any]) -> Path:
        """Write node ``index``'s config file (the one ``start_node`` and a reload read) and return its path."""
        path = self.workdir / f"lb{index + 1}.yaml"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))
        tmp.replace(path)
        return path

    def start_node(
        self,
        index: int,
        *,
        data: dict[str, Any] | None = None,
        drain_seconds: float = 1.0,
        start_grace: float = 10.0,
        log_level: str = "INFO",
    ) -> NodeProcess:
        """Run ``xdplb run`` in node ``index``'s namespace (not waiting for it: see ``NodeProcess.wait_ready``)."""
        current = self.processes[index]
        if current is not None and current.process.poll() is None:
            raise DemoError(f"node {index} is running")
        data = data if data is not None else self.node_config(index)
        path = self.write_config(index, data)
        api_host, _, api_port = str(data["api"]["listen"]).rpartition(":")
        log_path = self.workdir / f"lb{index + 1}.log"
        argv = [
            sys.executable,
            "-m",
            "balancer.cli",
            "run",
            str(path),
            "--drain-seconds",
            str(drain_seconds),
            "--start-grace",
            str(start_grace),
            "--log-level",
            log_level,
        ]
        with open(log_path, "ab") as out:
            process = self.nodes[index].popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        node = NodeProcess(
            self.nodes[index],
            config_path=path,
            log_path=log_path,
            process=process,
            api=(api_host.strip("[]"), int(api_port)),
        )
        self.processes[index] = node
        return node

    # the router's view

    def announced_by(self, vip: str) -> set[str]:
        """The next hops BIRD has for ``vip``/32 (one per node announcing it)."""
        prefix = f"{vip}/32"
        return {
            str(route.next_hop) for route in self.bird.routes(prefix) if route.prefix == ipaddress.ip_network(prefix)
        }

    def kernel_route(self, vip: str) -> str:
        """``ip route show VIP`` in the router's namespace: what BIRD installed in its kernel."""
        done = self.router.run(["ip", "route", "show", f"{vip}/32"], capture_output=True, text=True, timeout=10)
        return str(done.stdout).strip()


def cleanup_demo_leftovers(workdir_root: Path = WORKDIR_ROOT) -> list[str]:
    """Remove what dead demo runs left: their lab namespaces (``registry.cleanup_leftovers``), their BIRD
    directories and run directories. A run whose lab record still exists belongs to a live process: left alone.
    Returns the names removed."""
    removed = registry.cleanup_leftovers()
    if not workdir_root.is_dir():
        return removed
    for path in sorted(workdir_root.glob("xl*")):
        if (registry.REGISTRY_DIR / f"{path.name}.json").exists():
            continue  # its owner is alive (cleanup_leftovers just removed the records of dead ones)
        try:
            bird_dir = Path(json.loads((path / "run.json").read_text())["bird_workdir"])
        except (OSError, ValueError, KeyError):
            bird_dir = None
        if bird_dir is not None and bird_dir.name.startswith("xdplb-bird-") and bird_dir.is_dir():
            shutil.rmtree(bird_dir, ignore_errors=True)
            removed.append(str(bird_dir))
        shutil.rmtree(path, ignore_errors=True)
        removed.append(str(path))
    if removed:
        log.info("event=demo_leftovers_removed removed=%s", removed)
    return removed
