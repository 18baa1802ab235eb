"""A data plane in memory, behind the part of ``bpf.DataPlane``'s interface the reconciler uses.

It keeps what a real one would report (statuses with the same reasons and Maglev entry counts), records every
write, and refuses an update on request the way the kernel can (``fail``), so the core's logic and error paths
run without root. ``tests/balancer/test_reconciler.py`` checks it against the real one.
"""

from collections.abc import Mapping, Sequence

import bpf
import config


class FakeDataPlane:
    """``set_service``/``remove_service``/``services``/``needs_update``/``table_key``/``maglev`` as in DataPlane,
    and the lifecycle the daemon drives (``setup``, ``attach``, ``detach``, ``cleanup``, counters at zero)."""

    def __init__(self, max_services: int = 64, settings: bpf.DataPlaneSettings | None = None) -> None:
        self.settings = settings or bpf.DataPlaneSettings(max_services=max_services)
        self.fail_attach: set[str] = set()  # attaching these interfaces raises DataPlaneError
        self.interface_log: list[tuple[str, str]] = []  # ("attach"|"detach"|"prepare"|"release", interface), in order
        self.earlier: dict[str, str] = {}  # interface -> mode of a program an earlier run left there
        self.left_attached: dict[str, str] | None = None  # what cleanup(detach=False) left
        self._attached: dict[str, str] = {}
        self.maglev = bpf.MaglevCache()
        self.max_services = max_services
        self.writes: list[bpf.ServiceKey] = []  # every service update that reached the "maps"
        self.fail: set[bpf.ServiceKey] = set()  # updates of these raise DataPlaneError until removed from the set
        self.reserved: list[int] = []  # the size of each reserve_tables call
        self.tunnel: tuple[config.IpAddress | None, config.IpAddress | None, int] = (None, None, 0)  # set_tunnel
        self.tunnel_log: list[tuple[object, tuple[bpf.ServiceKey, ...]]] = []
        self.totals = bpf.GlobalCounters()  # what read_totals() says
        self.check_paths: dict[int, tuple[config.IpAddress, config.IpAddress, str | None]] | None = None  # enabled
        self.fail_check_paths = False  # enable_check_paths raises DataPlaneError, as a failed compile would
        self._specs: dict[bpf.ServiceKey, bpf.Service] = {}
        self._status: dict[bpf.ServiceKey, bpf.ServiceStatus] = {}
        self._ids: dict[bpf.ServiceKey, int] = {}
        self._slots: dict[tuple[bpf.ServiceKey, config.IpAddress], int] = {}

    def setup(self) -> None:
        pass

    def cleanup(self, *, detach: bool = True) -> None:
        if not detach:
            self.left_attached = dict(self._attached)
            self._attached.clear()
        for name in list(self._attached):
            self.detach(name)

    def earlier_program(self, ifname: str) -> bpf.EarlierProgram | None:
        mode = self.earlier.get(ifname)
        return bpf.EarlierProgram(mode, 7) if mode in ("native", "generic") else None  # type: ignore[arg-type]

    def inherit(self, earlier: bpf.EarlierProgram) -> bool:
        self.interface_log.append(("inherit", str(earlier.prog_id)))
        return True

    def take_over(self, ifname: str, earlier: bpf.EarlierProgram) -> None:
        if self.earlier.get(ifname) != earlier.mode:
            raise bpf.DataPlaneError(f"taking over XDP on {ifname} from program {earlier.prog_id}: File exists")
        self.attach(ifname, earlier.mode)

    def prepare(self, ifname: str) -> None:
        self.interface_log.append(("prepare", ifname))

    def release(self, device: str, mode: str) -> None:
        self.earlier.pop(device, None)
        self.interface_log.append(("release", device))

    def attach(self, ifname: str, mode: str = "auto") -> str:
        if ifname in self.fail_attach:
            raise bpf.DataPlaneError(f"attaching XDP to {ifname} failed: Operation not supported")
        self._attached[ifname] = "generic" if mode == "auto" else mode
        self.earlier.pop(ifname, None)  # replaced in one step
        self.interface_log.append(("attach", ifname))
        return self._attached[ifname]

    def detach(self, ifname: str) -> None:
        if self._attached.pop(ifname, None) is not None:
            self.interface_log.append(("detach", ifname))

    @property
    def attached(self) -> Mapping[str, str]:
        return dict(self._attached)

    @property
    def attached_ifindexes(self) -> Mapping[str, int]:
        return {name: index for index, name in enumerate(self._attached, start=100)}

    def read_counters(self) -> bpf.Counters:
        return bpf.Counters(bpf.GlobalCounters(), {}, {})

    def read_totals(self) -> bpf.GlobalCounters:
        return self.totals

    def flow_table_entries(self) -> dict[int, int]:
        return {4: 0, 6: 0}

    @property
    def services(self) -> Mapping[bpf.ServiceKey, bpf.ServiceStatus]:
        return dict(self._status)

    def needs_update(self, service: bpf.Service) -> bool:
        return self._specs.get(service.key) != service

    def set_tunnel(
        self,
        source_v4: config.IpAddress | None,
        source_v6: config.IpAddress | None,
        gue_port: int = bpf.DEFAULT_GUE_PORT,
    ) -> None:
        self.tunnel = (source_v4, source_v6, gue_port)
        self.tunnel_log.append((self.tunnel, tuple(self._specs)))  # with the services in the maps then

    @property
    def check_paths_enabled(self) -> bool:
        return self.check_paths is not None

    def enable_check_paths(self) -> None:
        if self.fail_check_paths:
            raise bpf.DataPlaneError("loading the check path programs failed: clang exited 1")
        if self.check_paths is None:
            self.check_paths = {}

    def set_check_path(
        self, path_id: int, vip: config.IpAddress, backend: config.IpAddress, tunnel: str | None
    ) -> None:
        if self.check_paths is None:
            raise bpf.DataPlaneError("check paths are not loaded: call enable_check_paths() first")
        self.check_paths[path_id] = (vip, backend, tunnel)

    def remove_check_path(self, path_id: int) -> None:
        if self.check_paths is not None:
            self.check_paths.pop(path_id, None)

    def check_path_counters(self) -> bpf.CheckPathCounters:
        return bpf.CheckPathCounters()

    def table_key(self, service: bpf.Service) -> bpf.maglev.TableKey | None:
        candidates = [(str(b.address), b.weight) for b in service.backends if b.reachable_by_frame and b.weight > 0]
        return self.maglev.key(candidates, service.table_size) if candidates else None

    def reserve_tables(self, services: Sequence[bpf.Service]) -> None:
        self.reserved.append(len(services))

    def set_service(self, service: bpf.Service) -> bpf.ServiceStatus:
        service.validate()
        if self._specs.get(service.key) == service:
            return self._status[service.key]
        if service.key in self.fail:
            raise bpf.DataPlaneError(f"writing a Maglev table of {service.table_size} entries failed: out of memory")
        if service.key not in self._ids:
            if len(self._ids) >= self.max_services:
                raise bpf.DataPlaneError(f"too many services (max_services={self.max_services})")
            self._ids[service.key] = len(self._ids)
        candidates = [b for b in service.backends if b.reachable_by_frame and b.weight > 0]
        for backend in service.backends:
            if backend.tunnel is not None and self.tunnel[0 if backend.address.version == 4 else 1] is None:
                raise bpf.DataPlaneError(
                    f"backend {backend.address}: {backend.tunnel} needs a tunnel source of "
                    f"IPv{backend.address.version} (set_tunnel)"
                )
        key = self.table_key(service)
        table = list(self.maglev.table(*key)) if key is not None else []
        entries = {str(b.address): table.count(i) for i, b in enumerate(candidates)}
        backends = []
        for backend in service.backends:
            slot = self._slots.setdefault((service.key, backend.address), len(self._slots) + 1)
            state = (
                bpf.BackendState.ACTIVE if backend.reachable_by_frame and backend.weight
                else bpf.BackendState.DRAINING if backend.reachable_by_frame else bpf.BackendState.NO_MAC
            )  # fmt: skip
            entry_count = entries.get(str(backend.address), 0)
            backends.append(bpf.BackendStatus(backend.address, backend.weight, backend.mac, slot, entry_count, state))
        self._specs[service.key] = service
        self._status[service.key] = bpf.ServiceStatus(service.key, self._ids[service.key], len(table), tuple(backends))
        self.writes.append(service.key)
        return self._status[service.key]

    def remove_service(self, key: bpf.ServiceKey) -> None:
        self._specs.pop(key, None)
        self._status.pop(key, None)
        self._ids.pop(key, None)
        self.writes.append(key)
