"""A hand-written ``status.Controller`` for API tests: a fixed config, a snapshot built from it, scripted reloads.

The snapshot is deterministic for a given ``tick`` (counters grow by fixed amounts per tick), so the golden
``/metrics`` file can be compared byte for byte and the console can show rates when ``tick`` advances.
"""

import dataclasses
from collections.abc import Callable

import config
from balancer import status

CONFIG_YAML = """
interfaces: [eth0]
api: {listen: "LISTEN"}
bgp:
  local_as: 65001
  router_id: 192.0.2.1
  peers:
    - {address: 198.18.0.1, peer_as: 65000}
    - {address: "2001:db8::1", peer_as: 65000, password: md5-secret}
services:
  - name: web
    vips: [192.0.2.100, "2001:db8::100"]
    port: 80
    need: 1
    checks:
      - type: http
        path: /healthz
        headers: {Authorization: "Bearer backend-secret", Host: www.example.com}
    backends:
      - {address: 198.18.0.11, weight: 2}
      - 198.18.0.12
      - {address: 198.18.0.13, state: drained}
  - name: dns
    vip: 192.0.2.53
    port: 53
    protocol: udp
    checks: [{type: dns, name: example.com.}]
    backends: [198.18.0.21]
  - vip: "2001:db8::53"
    port: 53
    protocol: udp
    checks: []
    backends: ["2001:db8::21"]
"""

STARTED_AT = 1_790_000_000.0
# address -> (health, reason, packets per tick)
_BACKENDS = {
    "198.18.0.11": ("up", "status 200", 1200),
    "198.18.0.12": ("down", "connection refused", 0),
    "198.18.0.13": ("up", "status 200", 40),
    "198.18.0.21": ("up", "NOERROR", 300),
    "2001:db8::21": ("up", "no checks", 100),
}
_SCALED_BACKEND = ("up", "status 200", 100)  # any backend of ``scaled_config``


def load(listen: str = "127.0.0.1:9180", token_file: str | None = None) -> config.XdplbConfig:
    """The fake's configuration, listening on ``listen`` (with ``token_file`` if given)."""
    text = CONFIG_YAML.replace("LISTEN", listen)
    if token_file is not None:
        text = text.replace("api: {", f'api: {{token_file: "{token_file}", ')
    return config.parse_config(text, source="fake.yaml")


class FakeController:
    """Implements ``status.Controller`` over ``load()``'s config; records admin calls."""

    def __init__(self, running: config.XdplbConfig | None = None, *, ready: bool = True) -> None:
        self._config = running if running is not None else load()
        self.ready = ready
        self.tick = 0
        self.overrides: dict[str, config.AdminState] = {}
        self.admin_calls: list[tuple[str, config.AdminState | None]] = []
        self.next_reload: status.ReloadResult | None = None
        self.next_config: config.XdplbConfig | None = None
        self.reloads = {"success": 1, "failure": 0}
        self.snapshots = 0
        self.down_every = 0  # when set, a backend whose address is a multiple of it is down (scaled configs)
        self.ticking = False  # when set, every snapshot is a tick later than the last (counters grow: rates show)

    @property
    def running_config(self) -> config.XdplbConfig:
        return self._config

    async def reload(self) -> status.ReloadResult:
        result = self.next_reload or status.ReloadResult(
            ok=True, config_digest=self._config.digest(), message="applied: no changes"
        )
        if result.ok:
            self.reloads["success"] += 1
            if self.next_config is not None:
                self._config = self.next_config
        else:
            self.reloads["failure"] += 1
        return result

    async def set_admin(self, backend_key: str, state: config.AdminState | None) -> None:
        keys = {service.backend_key(backend) for service, backend in self._config.backends()}
        if backend_key not in keys:
            raise KeyError(backend_key)
        self.admin_calls.append((backend_key, state))
        if state is None:
            self.overrides.pop(backend_key, None)
        else:
            self.overrides[backend_key] = state

    def snapshot_builder(self) -> Callable[[], status.Snapshot]:
        return self.snapshot

    def snapshot(self) -> status.Snapshot:
        self.snapshots += 1
        if self.ticking:
            self.tick += 1
        services = []
        for service in self._config.services:
            for vip in service.vips:
                services.append(self._service(service, str(vip)))
        up = {s.name: s.up for s in services}
        vips = {str(vip): service.name for service in self._config.services for vip in service.vips}
        t = self.tick
        return status.Snapshot(
            version="0.1.0",
            config_digest=self._config_digest(),
            config_source="/etc/xdplb/fake.yaml",
            started_at=STARTED_AT,
            ready=self.ready,
            interfaces={"eth0": "native"},
            services=tuple(services),
            vips=tuple(
                status.VipReport(
                    vip=vip,
                    prefix=f"{vip}/{128 if ':' in vip else 32}",
                    announced=up[name],
                    reason="all services up" if up[name] else f"{name}: 0 of 1 needed backends healthy",
                    services=(name,),
                )
                for vip, name in vips.items()
            ),
            peers=(
                status.PeerReport(
                    address="198.18.0.1", state="established", since=STARTED_AT + 5, routes_sent=3, reason=None
                ),
                status.PeerReport(
                    address="2001:db8::1",
                    state="down",
                    since=STARTED_AT + 5,
                    routes_sent=0,
                    reason="connection refused",
                ),
            ),
            totals={
                "rx_packets": 5000 + 1600 * t,
                "passed": 200 + 60 * t,
                "forwarded": 4796 + 1540 * t,
                "forwarded_bytes": 3_000_000 + 900_000 * t,
                "flow_hits": 4500,
                "flow_misses": 296,
                "flow_inserts": 296,
                "flood_guard_skips": 0,
                "drop_no_backend": 4,
                "drop_malformed": 0,
                "drop_fragment": 0,
                "drop_vlan_push": 0,
                "drop_no_source_mac": 0,
                "flow_evictions": 2,
                "icmp_too_big_forwarded": 3,
                "icmp_echo_replies": 12,
            },
            flow_table_entries={"ipv4": 250, "ipv6": 46},
            flow_table_size=65536,
            reloads=dict(self.reloads),
            last_reload_error=None,
            last_reload_success=STARTED_AT + 1,
            xdp_reattaches={"eth0": {"xdp_missing": 2}},
            check_paths={"sent": 40, "tunnelled": 20, "replies": 38, "unknown": 1, "refused": 0},
            health_transitions={"up": 12 + t, "down": 3 + t // 2},
        )

    def _config_digest(self) -> str:
        return self._config.digest()

    def _service(self, service: config.ServiceConfig, vip: str) -> status.ServiceReport:
        backends = []
        # the IPv6 VIP of web gets a quarter of the traffic
        share = 1 if ":" in vip else 3
        for backend in service.backends:
            key = service.backend_key(backend)
            health, reason, rate = _BACKENDS.get(str(backend.address), _SCALED_BACKEND)
            if self.down_every and int(backend.address) % self.down_every == 0:
                health, reason, rate = "down", "connection refused", 0
            admin = self.overrides.get(key, backend.state)
            takes = health == "up" and admin == config.AdminState.ENABLED and backend.weight > 0
            dataplane = (
                "active"
                if takes
                else "removed: disabled"
                if admin == "disabled"
                else ("draining" if health == "up" else "removed: down")
            )
            packets = (1000 + rate * self.tick) * share
            backends.append(
                status.BackendReport(
                    key=key,
                    address=str(backend.address),
                    weight=backend.weight,
                    admin=str(admin),
                    admin_override=str(self.overrides[key]) if key in self.overrides else None,
                    health=health,
                    reason=reason,
                    since=STARTED_AT + 3,
                    last_check_seconds=0.0021,
                    mac="02:00:00:00:00:11",
                    forwarding=service.forwarding_of(backend),
                    dataplane=dataplane,
                    table_entries=0,
                    packets=packets,
                    bytes=packets * 600,
                    new_flows=packets // 20,
                )
            )
        active = [b for b in backends if b.dataplane == "active"]
        slots = service.table_size if active else 0
        backends = [dataclasses.replace(b, table_entries=slots // len(active) if b in active else 0) for b in backends]
        packets = sum(b.packets for b in backends)
        return status.ServiceReport(
            name=service.name,
            vip=vip,
            port=service.port,
            protocol=service.protocol,
            sticky=service.sticky,
            need=service.need,
            healthy=len(active),
            up=len(active) >= service.need,
            table_size=slots,
            packets=packets,
            bytes=sum(b.bytes for b in backends),
            new_flows=sum(b.new_flows for b in backends),
            drop_no_backend=2,
            backends=tuple(backends),
        )


def scaled_config(services: int, backends: int, *, ports_per_vip: int = 4) -> config.XdplbConfig:
    """``services`` services of ``backends`` backends each, ``ports_per_vip`` services (ports) on each VIP: the
    issue's scale lab is 1,000 x 10, as 250 VIPs x 4 ports.

    Every backend has its own address and one HTTP check, as in the scale lab.
    """
    lines = ["interfaces: [eth0]", 'api: {listen: "127.0.0.1:9180"}', "services:"]
    for s in range(services):
        v = s // ports_per_vip
        vip = f"198.19.{v // 250}.{v % 250 + 1}"
        lines.append(
            f"  - {{name: s{s}, vip: {vip}, port: {8000 + s % ports_per_vip}, table_size: 509, "
            "checks: [{type: http, path: /}], backends: ["
        )
        first = s * backends
        lines += [
            f"      198.{18 + (first + b) // 62500}.{(first + b) // 250 % 250}.{(first + b) % 250 + 1},"
            for b in range(backends)
        ]
        lines.append("    ]}")
    return config.parse_config("\n".join(lines) + "\n", source="scaled.yaml")


class ScaledController(FakeController):
    """``FakeController`` over ``scaled_config``: builds its snapshot from scratch on every call, as the core does
    (0.25 s at 10,000 backends here), digesting the config once as ``XdplbConfig.digest`` does."""

    def __init__(self, services: int, backends: int, *, ports_per_vip: int = 4) -> None:
        super().__init__(scaled_config(services, backends, ports_per_vip=ports_per_vip))
        self._digested = (self._config, self._config.digest())

    def _config_digest(self) -> str:
        if self._digested[0] is not self._config:
            self._digested = (self._config, self._config.digest())
        return self._digested[1]
