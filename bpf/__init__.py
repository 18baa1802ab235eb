"""The XDP data plane: the C program, its bcc loader and map layouts (the packet test harness is ``bpf.testing``).

>>> plane = DataPlane(DataPlaneSettings(flow_table_size=4096))            # doctest: +SKIP
>>> plane.setup(); plane.attach("eth0")                                    # doctest: +SKIP
'native'
>>> plane.set_service(Service(ServiceKey(ip_address("192.0.2.100"), 80, "tcp"),
...                           (Backend(ip_address("198.18.0.11")), Backend(ip_address("198.18.0.12"), weight=2))))
...                                                                         # doctest: +SKIP
"""

from bpf._counters import BackendCounters, Counters, GlobalCounters, ServiceCounters
from bpf._kernel_source import KernelHeadersError, ensure_kernel_source
from bpf.check_path import MAX_CHECK_PATHS, CheckPathCounters
from bpf.check_path import mark_of as check_mark
from bpf.dataplane import DEFAULT_GUE_PORT, AttachMode, DataPlane, DataPlaneSettings, EarlierProgram
from bpf.errors import DataPlaneError
from bpf.maglev import DEFAULT_TABLE_SIZE, MaglevCache, maglev_table
from bpf.service import (
    Backend,
    BackendState,
    BackendStatus,
    NextHop,
    Protocol,
    Service,
    ServiceKey,
    ServiceStatus,
    Tunnel,
)

__all__ = [
    "DEFAULT_GUE_PORT",
    "DEFAULT_TABLE_SIZE",
    "MAX_CHECK_PATHS",
    "AttachMode",
    "Backend",
    "BackendCounters",
    "CheckPathCounters",
    "BackendState",
    "BackendStatus",
    "Counters",
    "DataPlane",
    "DataPlaneError",
    "DataPlaneSettings",
    "EarlierProgram",
    "GlobalCounters",
    "KernelHeadersError",
    "MaglevCache",
    "NextHop",
    "Protocol",
    "Service",
    "ServiceCounters",
    "ServiceKey",
    "ServiceStatus",
    "Tunnel",
    "check_mark",
    "ensure_kernel_source",
    "maglev_table",
]
