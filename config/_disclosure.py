"""Which configuration values may be shown to anyone who can read the API or the logs: an allow-list.

A value is shown only when its field is on the list below; everything else (BGP passwords, a TCP check's ``send``,
``dataplane.hash_seed``, header values, and any field added later until someone lists it) is ``<redacted>``. A
check's ``path`` is shown without its query string, and a check header's value only for a few plain header names.

The same list decides whether a config error may quote the value it rejects (``config._loader``): an error about
``bgp.peers[0].password`` says what is wrong, never what was written.
"""

from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from config._types import Loc

__all__ = ["REDACTED", "discloses", "redact"]

REDACTED = "<redacted>"
"""What a value that may not be shown is replaced with."""

_Transform: TypeAlias = Callable[[Any], Any]
# True: the whole subtree may be shown; a mapping: per key ("*" for any key or list index); a callable: the value
# shown is what it returns (and an error never quotes it).
_Node: TypeAlias = "bool | Mapping[str, _Node] | _Transform"

_SAFE_HEADERS = frozenset({"accept", "accept-encoding", "accept-language", "connection", "host", "user-agent"})


def _path_without_query(value: Any) -> Any:
    if not isinstance(value, str):
        return REDACTED
    path, question, _ = value.partition("?")
    return f"{path}?{REDACTED}" if question else path


def _headers(value: Any) -> Any:
    if not isinstance(value, dict):
        return REDACTED
    return {name: text if str(name).lower() in _SAFE_HEADERS else REDACTED for name, text in value.items()}


_CHECK: Mapping[str, _Node] = {
    **dict.fromkeys(
        (
            "type",
            "port",
            "timing",
            "method",
            "host",
            "sni",
            "expect_status",
            "tls_verify",
            "ca_file",
            "keepalive",
            "max_body_bytes",
            "expect_body",
            "expect_body_regex",
            "expect",
            "name",
            "qtype",
            "transport",
            "rcode",
            "via",
        ),
        True,
    ),
    "path": _path_without_query,
    "headers": _headers,
}  # not "send": a TCP check's payload is often a login (AUTH <password>)
_CHECKS: Mapping[str, _Node] = {"*": _CHECK}
_ATTRIBUTES: _Node = True  # next hop, MED, local preference, communities
_TREE: Mapping[str, _Node] = {
    "interfaces": True,
    "dataplane": dict.fromkeys(
        (
            "flow_table_size",
            "new_flow_rate_limit",
            "max_services",
            "max_backends",
            "answer_ping",
            "tunnel_source_v4",
            "tunnel_source_v6",
            "gue_port",
        ),
        True,
    ),
    "bgp": {
        **dict.fromkeys(("local_as", "router_id", "graceful_restart"), True),
        "attributes": _ATTRIBUTES,
        "peers": {
            "*": dict.fromkeys(
                ("address", "peer_as", "local_as", "local_address", "port", "hold_time", "passive"), True
            )
        },
    },
    "api": dict.fromkeys(
        (
            "listen",
            "token_file",
            "read_token_required",
            "idle_timeout",
            "max_connections",
            "max_connections_per_client",
            "fd_reserve",
        ),
        True,
    ),
    "policies": {"*": {"checks": _CHECKS}},
    "services": {
        "*": {
            **dict.fromkeys(
                ("name", "vips", "vip", "port", "protocol", "sticky", "table_size", "need", "policy", "forwarding"),
                True,
            ),
            "bgp": _ATTRIBUTES,
            "checks": _CHECKS,
            "backends": {
                "*": {
                    **dict.fromkeys(("address", "weight", "state", "vlan", "interface", "forwarding", "policy"), True),
                    "checks": _CHECKS,
                },
            },
        },
    },
}


def _child(node: _Node, key: str | int) -> _Node:
    if not isinstance(node, Mapping):
        return False
    found: _Node | None = node.get(key) if isinstance(key, str) else None
    return found if found is not None else node.get("*", False)


def discloses(loc: Loc) -> bool:
    """Whether the value at ``loc`` (``("bgp", "peers", 0, "port")``) may be shown as written.

    >>> discloses(("bgp", "peers", 0, "port")), discloses(("bgp", "peers", 0, "password"))
    (True, False)
    """
    node: _Node = _TREE
    for part in loc:
        if node is True:
            return True
        node = _child(node, part)
    return node is True


def redact(document: Any) -> Any:
    """A JSON dump of the configuration (``model_dump(mode="json")``) with every value not on the list redacted.

    >>> redact({"bgp": {"local_as": 65001, "peers": [{"address": "198.18.0.1", "password": "s3cret"}]}})
    {'bgp': {'local_as': 65001, 'peers': [{'address': '198.18.0.1', 'password': '<redacted>'}]}}
    """
    return _redact(document, _TREE)


def _redact(value: Any, node: _Node) -> Any:
    if node is True:
        return value
    if callable(node):
        return node(value)
    if value is None or node is False:
        return None if value is None else REDACTED
    if isinstance(value, dict):
        return {key: _redact(item, _child(node, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact(item, _child(node, index)) for index, item in enumerate(value)]
    return REDACTED
