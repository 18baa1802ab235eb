"""The whole configuration document, with checks resolved and a digest for the status API."""

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import Field, PrivateAttr, field_validator, model_validator

from config import _inherit, _rules, _types
from config._base import XdplbModel
from config._service import BackendConfig, PolicyConfig, ServiceConfig
from config._system import ApiConfig, DataplaneConfig, InterfaceConfig
from config.bgp import BgpConfig, RouteAttributes
from config.checks import Check

__all__ = ["XdplbConfig"]

_service_texts: dict[int, tuple[ServiceConfig, str]] = {}
"""The JSON of each service of the last digest, by id (the entry holds the service, so the id stays its own)."""


def _json(document: object) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


class XdplbConfig(XdplbModel):
    """The root of the configuration file.

    Derive a changed configuration by validating a document again: ``model_copy(update=...)`` skips validation and
    keeps the checks resolved for the original.
    """

    interfaces: tuple[InterfaceConfig, ...] = Field(min_length=1, description="where the XDP program attaches")
    dataplane: DataplaneConfig = Field(default_factory=DataplaneConfig, description="data-plane sizing and hashing")
    bgp: BgpConfig | None = Field(None, description="BGP speaker announcing healthy VIPs; unset: nothing is announced")
    api: ApiConfig = Field(default_factory=ApiConfig, description="JSON API, web console and /metrics")
    policies: dict[str, PolicyConfig] = Field(
        default_factory=dict, description="named check sets, referenced as `policy: NAME` by services and backends"
    )
    services: tuple[ServiceConfig, ...] = Field((), description="the load-balanced services")

    _checks: dict[str, tuple[Check, ...]] = PrivateAttr(default_factory=dict)
    _digest: str | None = PrivateAttr(None)

    @field_validator("policies")
    @classmethod
    def _policy_names(cls, value: dict[str, PolicyConfig]) -> dict[str, PolicyConfig]:
        _types.raise_problems("policies", _rules.verify_policy_names(value))
        return value

    @model_validator(mode="after")
    def _resolve(self) -> "XdplbConfig":
        _types.raise_problems("XdplbConfig", _rules.root_problems(self))
        cache: dict[tuple[int, int], tuple[Check, ...]] = {}
        self._checks = {
            service.backend_key(backend): _inherit.resolve_checks(service, backend, self.policies, cache)
            for service in self.services
            for backend in service.backends
        }
        return self

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> "XdplbConfig":
        """A copy (see the class docstring); its digest is computed again."""
        copied = super().model_copy(update=update, deep=deep)
        copied._digest = None
        return copied

    def backends(self) -> Iterator[tuple[ServiceConfig, BackendConfig]]:
        """Every (service, backend) pair, in document order."""
        for service in self.services:
            for backend in service.backends:
                yield service, backend

    def resolved_checks(self, service: ServiceConfig, backend: BackendConfig) -> tuple[Check, ...]:
        """The checks ``backend`` of ``service`` runs after inheritance, every ``port`` set; ``()`` runs none.

        KeyError if the pair is not part of this configuration.
        """
        key = service.backend_key(backend)
        try:
            return self._checks[key]
        except KeyError:
            raise KeyError(f"backend {key} is not in this configuration") from None

    def checks_path(self, service_index: int, backend_index: int) -> tuple[str | int, ...] | None:
        """Where the checks of ``services[service_index].backends[backend_index]`` are written in the document:
        ``("policies", "web", "checks")``, ``("services", 0, "backends", 2, "checks")``...; None when the backend
        runs the default check (or none, for UDP). Item ``k`` of ``resolved_checks`` is item ``k`` of that list.
        """
        service = self.services[service_index]
        return _inherit.written_checks_path(service, service.backends[backend_index], service_index, backend_index)

    def route_attributes(self, service: ServiceConfig) -> RouteAttributes:
        """The attributes ``service``'s VIPs are announced with: ``bgp.attributes`` overridden by ``service.bgp``."""
        base = self.bgp.attributes if self.bgp is not None else RouteAttributes()
        return base.merged(service.bgp)

    def digest(self) -> str:
        """SHA-256 (hex) of the effective configuration, defaults included: the same for files that mean the same.

        BGP passwords count only as set or unset: the digest is shown to anyone who can read the status API.
        """
        if self._digest is not None:
            return self._digest
        document = self.model_dump(mode="json", exclude={"services"})
        for peer in (document.get("bgp") or {}).get("peers", ()):
            # The digest is public (status API, metrics): a password must not be guessable offline from it.
            if peer.get("password") is not None:
                peer["password"] = "<set>"
        # Services are dumped once each (a reload keeps unchanged ones: see IncrementalLoader) and spliced in where
        # json.dumps(sort_keys=True) puts them, last: the text, and the digest, of dumping the whole document.
        global _service_texts
        dumped: dict[int, tuple[ServiceConfig, str]] = {}
        for service in self.services:
            dumped[id(service)] = _service_texts.get(id(service)) or (service, _json(service.model_dump(mode="json")))
        _service_texts = dumped
        services = ",".join(dumped[id(service)][1] for service in self.services)
        head = _json(document)
        text = f'{head[:-1]},"services":[{services}]}}'
        self._digest = hashlib.sha256(text.encode()).hexdigest()  # the model is frozen: it cannot change
        return self._digest
