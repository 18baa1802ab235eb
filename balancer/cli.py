"""The ``xdplb`` command line."""

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any
from pathlib import Path

import config
from balancer import api_client, preflight, status_table, stop, version

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="xdplb", description="XDP layer-4 load balancer with BGP route health injection."
    )
    parser.add_argument("--version", action="version", version=f"xdplb {version.installed_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="run the balancer in a lab of network namespaces (root): client, BIRD router, backends",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build a lab in network namespaces made for this run: a client, a router running BIRD, one xdplb\n"
        "node and three web backends. Run `xdplb run` there with config/examples/demo.yaml, print the console and\n"
        "/metrics URLs (on this machine's 127.0.0.1, the first free port from 9180 up) and the commands to try,\n"
        "then a status line every 2 s. Ctrl-C or SIGTERM stops it and removes everything it made; leftovers of\n"
        "an earlier run that crashed are removed first. Needs root.",
        epilog="For scripts: `xdplb demo --duration 30` runs 30 s, removes everything it made and exits 0\n"
        "(1 if the daemon failed).",
    )
    demo.add_argument(
        "--duration",
        metavar="SECONDS",
        type=_seconds,
        default=None,
        help="run this many seconds, then clean up and exit (default: until Ctrl-C or SIGTERM)",
    )
    demo.add_argument(
        "--port",
        metavar="PORT",
        type=int,
        default=9180,
        help="first localhost port to try for the console (default 9180; the next free one is used)",
    )
    demo.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level of the lab on stderr (the daemon logs to a file in the run's directory)",
    )
    balance = sub.add_parser(
        "balance",
        help="balance VIP:PORT to real servers from one line, no config file (root): the quickest try",
        description="Balance TCP port PORT of VIP, arriving on IFACE, to the real servers RIP (layer-2 Direct Server "
        "Return: they must be on IFACE's segment, with VIP on their loopback). The configuration is built in memory "
        "(no BGP, no file) and the real daemon runs it; a status line every 2 s. Ctrl-C, SIGTERM or SIGHUP stop "
        "it and detach XDP.",
    )
    balance.add_argument("interface", metavar="IFACE", help="interface the VIP's traffic arrives on")
    balance.add_argument("vip", metavar="VIP", help="virtual IP address (IPv4 or IPv6)")
    balance.add_argument("backends", metavar="RIP", nargs="+", help="real server addresses")
    balance.add_argument("--port", type=int, default=80, help="TCP port balanced and checked (default 80)")
    balance.add_argument(
        "--check",
        choices=["tcp", "http", "none"],
        default="tcp",
        help="health check of each real server: TCP connect, HTTP GET (2xx), or none (default tcp)",
    )
    balance.add_argument("--http-path", default="/", help="path the HTTP check requests (default /)")
    balance.add_argument(
        "--mode",
        choices=["auto", "native", "generic"],
        default="auto",
        help="XDP attach mode (default auto: native, else generic)",
    )
    balance.add_argument(
        "--api", metavar="ADDRESS:PORT", help="also serve the HTTP API, console and /metrics there (default: none)"
    )
    balance.add_argument(
        "--duration",
        metavar="SECONDS",
        type=_seconds,
        default=None,
        help="stop after this many seconds (default: until Ctrl-C, SIGTERM or SIGHUP)",
    )
    balance.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="daemon log level on stderr (default WARNING)",
    )
    balance.add_argument(
        "--log-format",
        default="logfmt",
        choices=config.LOG_FORMATS,
        help="logfmt key=value pairs or JSON objects, one event per line (default logfmt)",
    )
    check = sub.add_parser("check", help="validate a configuration file without touching the system")
    check.add_argument("config", metavar="CONFIG", help="YAML (or .json) configuration file")
    run = sub.add_parser("run", help="run the balancer (root): XDP data plane, health checks, BGP, API")
    run.add_argument("config", metavar="CONFIG", help="YAML (or .json) configuration file; SIGHUP reloads it")
    run.add_argument(
        "--drain-seconds",
        metavar="SECONDS",
        type=_seconds,
        default=1.0,
        help="on stop, seconds between withdrawing the routes and detaching XDP (default 1)",
    )
    run.add_argument(
        "--start-grace",
        metavar="SECONDS",
        type=_seconds,
        default=10.0,
        help="seconds to wait for every backend's first health verdict before announcing (default 10)",
    )
    run.add_argument(
        "--check-workers",
        metavar="N",
        type=_positive_int,
        default=None,
        help="health-checker processes (default: one per 2,000 checks a second, at most one per CPU, "
        "sized from the config at start)",
    )
    run.add_argument(
        "--state-file",
        metavar="PATH",
        help="where admin overrides (drain/disable/enable via the API) survive restarts; default "
        "/var/lib/xdplb/overrides-<hash of the config path>.json; 'none' keeps them in memory only",
    )
    run.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level on stderr (default INFO)",
    )
    run.add_argument(
        "--log-format",
        default="logfmt",
        choices=config.LOG_FORMATS,
        help="one event per line on stderr, as logfmt key=value pairs or as a JSON object "
        "(default logfmt); the checker processes follow",
    )
    show = sub.add_parser("status", help="show VIPs, services, backends and BGP peers of a running daemon")
    _api_options(show)
    show.add_argument(
        "--rate",
        metavar="SECONDS",
        type=_seconds,
        default=0.0,
        help="sample twice, SECONDS apart, and show packets per second instead of totals",
    )
    show.add_argument("--json", action="store_true", help="print the status JSON as the API returns it")
    for verb, what in _ADMIN_VERBS.items():
        admin = sub.add_parser(verb, help=f"{what} a backend of a running daemon (an override kept until reset)")
        admin.add_argument("service", metavar="SERVICE", help="the service's name (as `xdplb status` shows it)")
        admin.add_argument("backend", metavar="BACKEND", help="the backend's address")
        _api_options(admin)
    stopping = sub.add_parser(
        "stop",
        help="stop a running daemon and wait for it: a full stop, or a restart stop that leaves XDP forwarding",
        description="Signal the daemon PID and wait until it has exited. --restart: a restart stop (SIGUSR2; XDP "
        "keeps forwarding with its state, and the next run takes over from it without a client noticing). --full: "
        "withdraw the routes, drain, detach (SIGTERM). --systemd-unit UNIT (the shipped unit's ExecStop): a restart "
        "stop when systemd is restarting UNIT (systemctl restart, a package upgrade), else a full stop.",
    )
    stopping.add_argument(
        "pid",
        metavar="PID",
        type=_positive_int,
        nargs="?",
        help="the daemon's process id ($MAINPID under systemd, empty once the daemon has exited: nothing to do)",
    )
    kind = stopping.add_mutually_exclusive_group(required=True)
    kind.add_argument("--restart", action="store_true", help="a restart stop: XDP stays attached")
    kind.add_argument("--full", action="store_true", help="a full stop: withdraw, drain, detach")
    kind.add_argument(
        "--systemd-unit", metavar="UNIT", help="ask systemd: a restart stop if its job on UNIT is a restart"
    )
    stopping.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_seconds,
        default=30.0,
        help="how long the whole stop may take, asking systemd included (default 30)",
    )
    reload = sub.add_parser("reload", help="make a running daemon re-read its config file, and say what changed")
    _api_options(reload)
    decap = sub.add_parser("decap", help="on a backend (root): take xdplb's IPIP/GUE tunnels off in XDP, no daemon")
    decap.add_argument(
        "action",
        choices=("attach", "detach", "status"),
        help="attach (replaces an earlier decap), detach, or show mode, addresses and counters",
    )
    decap.add_argument("interface", metavar="IFACE", help="the backend's interface the tunnels arrive on")
    decap.add_argument("--gue-port", type=int, default=6080, help="UDP port of GUE (default 6080; 0: IPIP only)")
    decap.add_argument(
        "--address",
        action="append",
        type=_ip_address,
        metavar="ADDR",
        help="a tunnel address of this host (repeatable; default: the interface's global ones)",
    )
    decap.add_argument(
        "--source",
        action="append",
        type=_ip_address,
        metavar="ADDR",
        help="take tunnels only from this outer source, a balancer's tunnel source (repeatable; default: from any)",
    )
    decap.add_argument(
        "--mode",
        choices=("auto", "native", "generic"),
        default="auto",
        help="XDP attach mode (auto: native, else generic)",
    )
    return parser


def _ip_address(text: str) -> config.IpAddress:
    import ipaddress

    try:
        return ipaddress.ip_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


_ADMIN_VERBS = {
    "drain": "drain (no new flows; its flows stay)",
    "disable": "disable (out of the table, no checks)",
    "enable": "enable, whatever the file says,",
    "reset": "reset to the file's admin state",
}


def _api_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--api", metavar="URL", help=f"base URL of the daemon's API (default {api_client.DEFAULT_URL})")
    where.add_argument(
        "--config",
        metavar="CONFIG",
        help="take the API address (api.listen) and token file (api.token_file) from this config",
    )
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        help="file holding the API's bearer token (default: the config's api.token_file, if any)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < 86400 * 365:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"must be between 0 and a year, not {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _check(path: str) -> int:
    """``xdplb check CONFIG``: 0 and a summary on stdout, or 1 and one line per problem on stderr.

    It refuses what the daemon would refuse at start or reload (``preflight``), with the same lines.
    """
    try:
        loaded = preflight.load(path)
    except config.ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    backends = sum(len(service.backends) for service in loaded.services)
    vips = len({vip for service in loaded.services for vip in service.vips})
    entries = sum(len(service.vips) * service.table_size for service in loaded.services)
    memory = loaded.dataplane.memory_bytes(entries) / (1 << 20)
    print(f"OK: {len(loaded.services)} services, {backends} backends, {vips} VIPs; data plane about {memory:.0f} MiB")
    return 0


RESTART_EXIT_STATUS = 75  # EX_TEMPFAIL: "start me again", the unit's RestartForceExitStatus


def _run(args: argparse.Namespace) -> int:
    """``xdplb run CONFIG``: the daemon, until SIGTERM or SIGINT (a full stop), or SIGUSR2 (a restart stop: XDP stays
    attached and the exit status is ``RESTART_EXIT_STATUS``, on which the systemd unit starts it again)."""
    # A stop asked for while bcc loads and the config is read (a `systemctl restart` right after a start) is kept
    # and acted on once the daemon's own handlers are in place: the default actions would kill the process.
    early: list[int] = []
    before = {
        signum: signal.signal(signum, lambda received, _frame: early.append(received))
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
    }
    try:
        return _run_daemon(args, early)
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def _run_daemon(args: argparse.Namespace, early: list[int]) -> int:
    from balancer import api_guard, daemon, faces, overrides  # the daemon pulls in bcc: only for this command

    config.configure_logging(args.log_level, args.log_format)
    api_guard.raise_open_file_limit()  # before any socket: the API's connection limit is computed from it
    loader = config.IncrementalLoader()  # the daemon's: it reads the file once, and a reload only what changed
    try:
        loaded = loader.load(args.config)
        preflight.verify(loaded, source=args.config)
    except config.ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    config_path = Path(args.config)
    if args.state_file == "none":
        state_file = None
    else:
        state_file = Path(args.state_file) if args.state_file else overrides.default_path(config_path)
    runner = daemon.Daemon(
        config_path,
        start_grace=args.start_grace,
        drain_seconds=args.drain_seconds,
        state_file=state_file,
        check_workers=args.check_workers,
        initial_config=loaded,
        loader=loader,
    )
    faces.attach(runner)

    async def main() -> None:
        running = asyncio.ensure_future(runner.run())
        await asyncio.sleep(0)  # run() has put its signal handlers in place
        if signal.SIGUSR2 in early:
            runner.restart_stop()
        elif early:
            runner.stop_trigger.set()
        await running

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as loop:
            loop.run(main())
    except config.XdplbError as error:
        print(f"xdplb: {error}", file=sys.stderr)
        return 1
    return RESTART_EXIT_STATUS if runner.restarting else 0


def _balance(args: argparse.Namespace) -> int:
    """``xdplb balance IFACE VIP RIP...``: the daemon on a config built from the arguments, until stopped."""
    from balancer import balance  # the daemon (bcc) is imported only once the arguments are good

    config.configure_logging(args.log_level, args.log_format)
    options = balance.BalanceOptions(
        interface=args.interface,
        vip=args.vip,
        backends=tuple(args.backends),
        port=args.port,
        check=args.check,
        http_path=args.http_path,
        mode=args.mode,
        api=args.api,
        duration=args.duration,
    )
    return balance.run_balance(options, sys.stdout, loop_factory=_loop_factory())


def _demo(args: argparse.Namespace) -> int:
    """``xdplb demo``: the namespace lab until Ctrl-C, SIGTERM or ``--duration``."""
    from balancer.lab import demo  # pyroute2, namespaces: only for this command

    config.configure_logging(args.log_level)
    options = demo.DemoOptions(duration=args.duration, first_port=args.port)
    return demo.run_demo(options, sys.stdout)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _status(args: argparse.Namespace) -> int:
    """``xdplb status``: 0 and the tables on stdout, or 1 and why on stderr."""
    try:
        url, token = _where(args)
        latest, earlier = status_table.sample(url, rate_seconds=args.rate, token=token)
    except (status_table.StatusUnavailable, config.ConfigError) as error:
        print(f"xdplb status: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(latest, indent=2))
        return 0
    try:
        table = status_table.render(latest, earlier)
    except (KeyError, TypeError, ValueError) as error:  # another version's API: say so rather than a traceback
        print(f"xdplb status: unexpected status format ({error!r}); try --json", file=sys.stderr)
        return 1
    print(table, end="")
    return 0


def _where(args: argparse.Namespace) -> tuple[str, str | None]:
    """The API's base URL and bearer token the arguments name; ApiUnavailable or ConfigError if unusable."""
    url, token_file = args.api, args.token_file
    if args.config is not None:
        running = config.load_config(args.config)
        url = api_client.api_url(running)
        token_file = token_file or running.api.token_file
    return url or api_client.DEFAULT_URL, api_client.read_token(token_file) if token_file else None


def _post(args: argparse.Namespace, path: str) -> tuple[int, Any]:
    """POST ``path`` to the API the arguments name; ApiUnavailable or ConfigError when it cannot be asked."""
    url, token = _where(args)
    return api_client.call(url, "POST", path, token=token)


def _admin(args: argparse.Namespace) -> int:
    """``xdplb drain|disable|enable|reset SERVICE BACKEND``: 0 and the backend's admin state, or 1 and why."""
    try:
        code, body = _post(args, api_client.admin_path(args.service, args.backend, args.command))
    except (api_client.ApiUnavailable, config.ConfigError) as error:
        print(f"xdplb {args.command}: {error}", file=sys.stderr)
        return 1
    if code != 200 or not isinstance(body, dict):
        print(f"xdplb {args.command}: {_refusal(code, body)}", file=sys.stderr)
        return 1
    override = " (override)" if body.get("admin_override") else ""
    print(f"{args.service} {args.backend}: {body.get('admin')}{override}")
    return 0


def _reload(args: argparse.Namespace) -> int:
    """``xdplb reload``: 0 and what changed, or 1 and why the daemon refused (the running config stays)."""
    try:
        code, body = _post(args, "/api/v1/reload")
    except (api_client.ApiUnavailable, config.ConfigError) as error:
        print(f"xdplb reload: {error}", file=sys.stderr)
        return 1
    if isinstance(body, dict) and "ok" in body:
        print(body.get("message", ""), file=sys.stdout if body["ok"] else sys.stderr)
        return 0 if body["ok"] and code == 200 else 1
    print(f"xdplb reload: {_refusal(code, body)}", file=sys.stderr)
    return 1


def _refusal(code: int, body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    return f"HTTP {code}: {error or body}"


def _decap(args: argparse.Namespace) -> int:
    import bpf
    from bpf import decap

    try:
        if args.action == "attach":
            found = decap.attach(
                args.interface,
                mode=args.mode,
                gue_port=args.gue_port or None,
                addresses=args.address,
                sources=args.source or (),
            )
        elif args.action == "detach":
            decap.detach(args.interface)
            print(f"{args.interface}: decap detached")
            return 0
        else:
            found = decap.status(args.interface)
    except (bpf.DataPlaneError, bpf.KernelHeadersError) as error:
        print(f"xdplb decap: {error}", file=sys.stderr)
        return 1
    counters = found.counters
    print(
        f"{found.interface}: decap attached ({found.mode}, program {found.prog_id}); tunnels to "
        f"{', '.join(map(str, found.addresses))} from {', '.join(map(str, found.sources)) or 'any source'}; "
        f"GUE port {found.gue_port or 'off'}"
    )
    print(
        f"  frames {counters.rx_packets}  ipip {counters.ipip}  gue {counters.gue}  malformed {counters.malformed}"
        f"  refused {counters.refused}"
    )
    return 0


def _stop(args: argparse.Namespace) -> int:
    """``xdplb stop PID``: 0 once the daemon has exited (or with no PID: it had), 1 if it could not be signalled, is
    not an xdplb daemon, or did not exit in time."""
    if args.pid is None:  # systemd runs ExecStop with an empty $MAINPID after the daemon exited on its own
        return 0
    started = time.monotonic()
    restart = args.restart or (args.systemd_unit is not None and stop.restart_job_pending(args.systemd_unit))
    print(f"xdplb stop: {'restart' if restart else 'full'} stop of process {args.pid}", file=sys.stderr)
    try:
        stop.stop_daemon(args.pid, restart=restart, timeout=args.timeout - (time.monotonic() - started))
    except stop.StopError as error:
        print(f"xdplb stop: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xdplb`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    if args.command == "check":
        return _check(args.config)
    if args.command == "balance":
        return _balance(args)
    if args.command == "run":
        return _run(args)
    if args.command == "status":
        return _status(args)
    if args.command in _ADMIN_VERBS:
        return _admin(args)
    if args.command == "reload":
        return _reload(args)
    if args.command == "decap":
        return _decap(args)
    if args.command == "stop":
        return _stop(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
