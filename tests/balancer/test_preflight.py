"""Parity: ``xdplb check`` refuses what the daemon refuses at start and on reload, with the same lines.

The table holds one document per refusal kind, from ``preflight`` (speaker options ExaBGP cannot take, checks that
cannot be sent) down to the loader's bounds; ``test_the_table_covers_every_refusal_in_the_code`` reads the lower
packages' sources, so a new refusal without a case here fails. On main, the daemon refused `passive: true`, a quote
in an MD5 password, a non-Latin-1 check path and a missing CA file only once it applied them (BGP left dead, or an
HTTP 500), and `xdplb check` accepted all four.
"""

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import bgp
import config
import healthchecks
from balancer import cli, daemon, preflight

HEAD = "interfaces: [eth0]\n"
BGP = "bgp: {local_as: 65001, router_id: 192.0.2.1, peers: [{address: 198.18.0.1, peer_as: 65000%s}]}\n"


def service(checks: str = "", backend: str = "198.18.0.11", **extra: str) -> str:
    fields = {"vip": "192.0.2.100", "port": "80", "backends": f"[{backend}]"} | extra
    if "vips" in extra:
        del fields["vip"]
    if checks:
        fields["checks"] = checks
    return "services:\n- {" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}\n"


@dataclass(frozen=True)
class Refusal:
    description: str
    document: str
    line: str  # the whole refusal, after "FILE: "


REFUSALS = [
    Refusal(
        "passive session",
        HEAD + BGP % ", passive: true",
        "bgp.peers[0].passive: peer 198.18.0.1: passive sessions are not supported by the ExaBGP driver",
    ),
    Refusal(
        "quote in the MD5 password",
        HEAD + BGP % ", password: 'pa\"ss'",
        "bgp.peers[0].password: peer "
        "198.18.0.1: the MD5 password must be non-empty, without quotes, backslashes or line breaks",
    ),
    Refusal(
        "empty MD5 password",
        HEAD + BGP % ", password: ''",
        "bgp.peers[0].password: peer 198.18.0.1: the MD5 "
        "password must be non-empty, without quotes, backslashes or line breaks",
    ),
    Refusal(
        "MD5 password over 80 bytes",
        HEAD + BGP % (", password: " + "x" * 81),
        "bgp.peers[0].password: peer "
        "198.18.0.1: the MD5 password must be at most 80 bytes (the kernel's TCP-MD5 key size; ExaBGP refuses "
        "longer ones)",
    ),
    Refusal(
        "duplicate peer (config)",
        HEAD + BGP % "}, {address: 198.18.0.1, peer_as: 65002",
        "bgp.peers[1].address: 198.18.0.1 is already peers[0] (line 2)",
    ),
    Refusal(
        "local address of another family (config)",
        HEAD + BGP % ", local_address: '2001:db8::2'",
        "bgp.peers[0].local_address: IPv6 but the peer address 198.18.0.1 is IPv4 (line 2)",
    ),
    Refusal(
        "next hop that cannot be announced (config)",
        HEAD + BGP.replace("peers:", "attributes: {next_hop: 0.0.0.0}, peers:") % "" + service(),
        "bgp.attributes.next_hop: 0.0.0.0 is not a host address (unspecified, multicast or broadcast) (line 2)",
    ),
    Refusal(
        "non-Latin-1 path in a policy",
        HEAD + "policies: {web: {checks: [{type: http, path: '/caf\u2603'}]}}\n" + service(policy="web"),
        "policies.web.checks[0].path: path '/caf\u2603': only Latin-1 characters "
        "can be sent (percent-encode the others)",
    ),
    Refusal(
        "non-Latin-1 host in a service's checks",
        HEAD + service("[{type: tcp}, {type: http, host: '\u4f8b.example'}]"),
        "services[0].checks[1].host: host '\u4f8b.example': only Latin-1 characters "
        "can be sent (write a name in its xn-- form)",
    ),
    Refusal(
        "non-Latin-1 header in a backend's checks",
        HEAD + service(backend="{address: 198.18.0.11, checks: [{type: http, headers: {X-A: '\u2603'}}]}"),
        "services[0].backends[0].checks[0].headers: header 'X-A': only Latin-1 characters can be sent",
    ),
    Refusal(
        "missing ca_file",
        HEAD + service("[{type: https, ca_file: /nonexistent/ca.pem}]"),
        "services[0].checks[0].ca_file: ca_file '/nonexistent/ca.pem': cannot load: No such file or directory",
    ),
    Refusal(
        "tcp send beyond \\xff",
        HEAD + service("[{type: tcp, send: '\\U0001F600'}]"),
        "services[0].checks[0].send: tcp check send: bad escape or a character beyond \\xff: ordinal not in range(256)",
    ),
    Refusal(
        "tcp expect with a bad escape",
        HEAD + service("[{type: tcp, expect: '\\x'}]"),
        "services[0].checks[0].expect: tcp check expect: bad escape or a character beyond \\xff: truncated "
        "\\xXX escape",
    ),
    Refusal(
        "dns name that cannot be encoded",
        HEAD + service("[{type: dns, name: 'a..b'}]", protocol="udp"),
        "services[0].checks[0].name: dns check: bad name 'a..b': A DNS label is empty.",
    ),
    Refusal(
        "body regex bytes cannot take (config)",
        HEAD + service("[{type: http, expect_body_regex: '\\N{DIGIT ONE}'}]"),
        "services[0].checks[0].expect_body_regex: bad regular expression: bad escape \\N at position 0 (line 3)",
    ),
    Refusal(
        "data-plane limits (config)",
        HEAD + "dataplane: {max_services: 1}\n" + service(vips="[192.0.2.100, 192.0.2.101]"),
        "dataplane.max_services: the services need 2 data-plane services (one per VIP, port and "
        "protocol) but max_services is 1 (line 2)",
    ),
    Refusal(
        "check through the data path with no VIP of the backend's family (config)",
        HEAD + service("[{type: tcp, via: dataplane}]", backend="'2001:db8::11'"),
        "services[0].checks: 2001:db8::11 runs a "
        "check with via: dataplane, which goes to a VIP of the backend's family, and 192.0.2.100:80/tcp has no "
        "IPv6 VIP (line 3)",
    ),
    Refusal(
        "nested 1,000 deep (loader)",
        "interfaces: " + "[" * 1000 + "]" * 1000 + "\n",
        "line 1, column 76: nested more than 64 levels deep",
    ),
    Refusal(
        "billion laughs (loader)",
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}' if i > 1 else '*a'] * 10)}]\n" for i in range(1, 8)),
        "line 6, column 15: more than 250,000 nodes (aliases count each time they are used)",
    ),
    Refusal(
        "need: no (config)",
        HEAD + service(need="no"),
        "services[0].need: input should be a valid integer, got "
        "'no' (a whole number in decimal digits, unquoted) (line 3)",
    ),
]


def _check(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(["check", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    return err.removesuffix("\n")


@pytest.mark.parametrize("case", REFUSALS, ids=[case.description for case in REFUSALS])
async def test_check_start_and_reload_refuse_alike(
    case: Refusal, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(case.document, encoding="utf-8")
    expected = f"{path}: {case.line}"
    assert _check(path, capsys) == expected

    starting = daemon.Daemon(path)
    with pytest.raises(config.ConfigError) as caught:
        await starting.setup()  # refused before the data plane is touched: no root needed
    assert str(caught.value) == expected

    running = daemon.Daemon(path)
    running._config = config.parse_config(HEAD, source="running.yaml")  # as if started with a minimal config
    result = await running.reload()
    assert (result.ok, result.message) == (False, expected)
    assert running.running_config.interfaces[0].name == "eth0" and running._reloads == {"success": 0, "failure": 1}
    assert running._last_reload_error == expected


def test_the_table_covers_every_refusal_in_the_code() -> None:
    root = Path(healthchecks.__file__).parent
    check_fields = {field for source in root.glob("*.py") for field in re.findall(r'field="(\w+)"', source.read_text())}
    bgp_fields = set(re.findall(r'\(\*where, "(\w+)"\)', (Path(bgp.__file__).parent / "_exabgp_config.py").read_text()))
    covered = {case.line.split(":")[0].rsplit(".", 1)[-1] for case in REFUSALS}
    assert check_fields and bgp_fields
    assert check_fields - covered == set()
    assert bgp_fields - covered == set()


def test_a_valid_document_passes_every_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for example in sorted((Path(config.__file__).parent / "examples").glob("*.yaml")):
        preflight.verify(config.load_config(example), source=str(example))
        assert cli.main(["check", str(example)]) == 0, capsys.readouterr().err
    capsys.readouterr()


def test_one_refusal_per_written_check_however_many_backends_run_it(tmp_path: Path) -> None:
    backends = ", ".join(f"198.18.0.{i}" for i in range(1, 200))
    document = (
        HEAD + "policies: {web: {checks: [{type: http, path: '/\u2603'}]}}\n" + service(backend=backends, policy="web")
    )
    with pytest.raises(config.ConfigError) as caught:
        preflight.verify(config.parse_config(document, source="lb.yaml"), source="lb.yaml")
    assert [path for path, _ in caught.value.problems] == ["policies.web.checks[0].path"]


def test_a_ca_file_that_is_not_pem(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("not a certificate\n")
    cfg = config.parse_config(HEAD + service(f"[{{type: https, ca_file: '{pem}'}}]"), source="lb.yaml")
    with pytest.raises(config.ConfigError, match=r"lb.yaml: services\[0\].checks\[0\].ca_file: .*cannot load"):
        preflight.verify(cfg, source="lb.yaml")


def test_a_route_the_speaker_would_refuse_is_named_at_its_next_hop() -> None:
    # The config refuses such a next hop already; model_construct makes one, to prove preflight asks the speaker too.
    cfg = config.parse_config(HEAD + BGP % "" + service(), source="lb.yaml")
    assert cfg.bgp is not None
    bad = config.RouteAttributes.model_construct(next_hop=ipaddress.ip_address("224.0.0.1"))
    broken = cfg.model_copy(update={"bgp": cfg.bgp.model_copy(update={"attributes": bad})})
    with pytest.raises(config.ConfigError) as caught:
        preflight.verify(broken, source="lb.yaml")
    assert caught.value.problems == (("bgp.attributes.next_hop", "next-hop 224.0.0.1 is not a unicast address"),)


def test_tunnels_say_which_forwarding_sysctls_are_off(tmp_path: Path) -> None:
    """bpf_fib_lookup gives no next hop for a frame from an interface that does not forward: the daemon says which
    sysctl to set, for the families of its tunnelled backends only."""
    from balancer.daemon import _warn_about_forwarding

    for family, value in (("ipv4", "0"), ("ipv6", "0")):
        conf = tmp_path / "net" / family / "conf" / "eth0"
        conf.mkdir(parents=True)
        (conf / "forwarding").write_text(value + "\n")
    text = """
interfaces: [eth0]
dataplane: {tunnel_source_v4: 198.18.0.1}
services:
  - {vip: 192.0.2.100, port: 80, forwarding: gue, checks: [], backends: [198.18.5.20]}
  - {vip: 192.0.2.100, port: 81, checks: [], backends: ["2001:db8::20"]}
"""
    cfg = config.parse_config(text, source="x.yaml")
    assert _warn_about_forwarding(cfg, tmp_path / "net") == ["net.ipv4.conf.eth0.forwarding"]
    (tmp_path / "net" / "ipv4" / "conf" / "eth0" / "forwarding").write_text("1\n")
    assert _warn_about_forwarding(cfg, tmp_path / "net") == []
