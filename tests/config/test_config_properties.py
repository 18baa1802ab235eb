"""Properties over generated documents: round trips, resolution, and exact paths for an unknown key anywhere."""

import json

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import config


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:
        return True  # write shared lists out in full, so a change to one place stays in one place


def dump(document: object) -> str:
    return yaml.dump(document, Dumper=_Dumper)


CHECKS = st.sampled_from(
    [
        [{"type": "tcp"}],
        [{"type": "http", "path": "/healthz", "timing": {"interval": 3, "timeout": 1}}],
        [{"type": "https", "port": 8443}, {"type": "tcp", "port": 22}],
        [],
    ]
)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, object]:
    services = []
    for i in range(draw(st.integers(1, 4))):
        count = draw(st.integers(1, 4))
        backend_numbers = draw(st.lists(st.integers(1, 250), min_size=count, max_size=count, unique=True))
        backends: list[object] = []
        for number in backend_numbers:
            backend: dict[str, object] = {"address": f"198.18.0.{number}"}
            if draw(st.booleans()):
                backend["weight"] = draw(st.integers(0, 65535))
                backend["state"] = draw(st.sampled_from(["enabled", "drained", "disabled"]))
            override = draw(st.sampled_from(["none", "policy", "checks"]))
            if override == "policy":
                backend["policy"] = "p"
            elif override == "checks":
                backend["checks"] = draw(CHECKS)
            backends.append(backend if len(backend) > 1 or draw(st.booleans()) else backend["address"])
        service: dict[str, object] = {
            "vips": [f"192.0.2.{i + 1}"] + ([f"2001:db8::{i + 1}"] if draw(st.booleans()) else []),
            "port": draw(st.integers(1, 65535)),
            "protocol": "tcp",
            "need": draw(st.integers(0, count)),
            "table_size": draw(st.sampled_from([7, 251, 16381, 65537])) if count <= 7 else 16381,
            "backends": backends,
        }
        if draw(st.booleans()):
            service["policy"] = "p"
        services.append(service)
    return {
        "interfaces": [{"name": "eth0", "mode": draw(st.sampled_from(["auto", "native", "generic"]))}],
        "policies": {"p": {"checks": draw(CHECKS)}},
        "services": services,
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_round_trip_and_every_resolved_check_has_a_port(document: dict[str, object]) -> None:
    loaded = config.parse_config(dump(document), source="gen.yaml")
    assert config.validate_config(loaded.model_dump(mode="json")) == loaded
    for service, backend in loaded.backends():
        assert all(check.port is not None for check in loaded.resolved_checks(service, backend))


def _mappings(node: object, loc: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found = []
    if isinstance(node, dict):
        found.append(loc)
        for key, value in node.items():
            found += _mappings(value, (*loc, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _mappings(value, (*loc, index))
    return found


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), st.data())
def test_an_unknown_key_anywhere_is_reported_at_its_path(document: dict[str, object], data: st.DataObject) -> None:
    where = data.draw(st.sampled_from([loc for loc in _mappings(document) if loc != ("policies",)]))
    broken = json.loads(json.dumps(document))  # no shared lists: a change stays in one place
    node: object = broken
    for part in where:
        node = node[part]  # type: ignore[index]
    node["zz_unknown"] = 1  # type: ignore[index]
    try:
        config.parse_config(dump(broken), source="gen.yaml")
    except config.ConfigError as error:
        path, message = error.problems[-1]
        assert [p for p, _ in error.problems].count(path) == 1
        assert path == config.format_path((*where, "zz_unknown"))
        assert message.startswith("unknown key (line ")
    else:
        raise AssertionError(f"no error for an unknown key at {where}")
