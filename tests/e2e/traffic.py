"""Client-side traffic for the end-to-end tests: plain sockets made in the client's namespace, every loop bounded."""

import concurrent.futures
import dataclasses
import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from balancer.lab.netns import Host
from tests.reference import flowhash, maglev

STREAM_LINES_PER_SECOND = 10  # balancer.lab.http_backend sends one line every 100 ms


@dataclasses.dataclass(frozen=True)
class Reply:
    """One HTTP/1.0 exchange with the VIP: which backend answered, and whether the reply was whole."""

    source: str
    sport: int
    backend: str | None  # the X-Backend header
    complete: bool  # 200, and exactly Content-Length bytes of body naming the same backend, then EOF
    error: str | None
    started: float  # time.monotonic() at connect
    seconds: float


def _socket(client: Host, source: str | None) -> socket.socket:
    with client.entered():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source is not None:
        sock.bind((source, 0))
    return sock


def _read_all(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    data = b""
    while len(data) < limit and (chunk := sock.recv(65536)):
        data += chunk
    return data


def fetch(client: Host, vip: str, *, source: str | None = None, timeout: float = 3.0) -> Reply:
    """GET / from the VIP over a new connection (from ``source`` if given)."""
    started = time.monotonic()
    sport, backend = 0, None
    sock = _socket(client, source)
    try:
        sock.settimeout(timeout)
        sock.connect((vip, 80))
        source, sport = sock.getsockname()[:2]
        sock.sendall(f"GET / HTTP/1.0\r\nHost: {vip}\r\n\r\n".encode())
        data = _read_all(sock)
    except OSError as error:
        return Reply(str(source), sport, None, False, repr(error), started, time.monotonic() - started)
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    backend = headers.get("x-backend")
    complete = (
        lines[0].startswith("HTTP/1.")
        and " 200 " in lines[0] + " "
        and backend is not None
        and headers.get("content-length") == str(len(body))
        and body == f"{backend}\n".encode()
    )
    return Reply(
        str(source),
        sport,
        backend,
        complete,
        None if complete else f"incomplete: {data[:200]!r}",
        started,
        time.monotonic() - started,
    )


def fetch_many(
    client: Host,
    vip: str,
    count: int,
    *,
    sources: Sequence[str | None] = (None,),
    workers: int = 8,
    timeout: float = 3.0,
) -> list[Reply]:
    """``count`` fetches, ``workers`` at a time, cycling through ``sources``."""
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [
            pool.submit(fetch, client, vip, source=sources[i % len(sources)], timeout=timeout) for i in range(count)
        ]
        return [future.result(timeout + 30) for future in futures]


class Prober:
    """A background thread opening one new connection every ``interval`` seconds (bounded by ``max_seconds``)."""

    def __init__(self, client: Host, vip: str, *, interval: float = 0.02, max_seconds: float = 30.0) -> None:
        self.replies: list[Reply] = []
        self._stop = threading.Event()
        self._args = (client, vip, interval, max_seconds)
        self._thread = threading.Thread(target=self._run, name="prober", daemon=True)

    def _run(self) -> None:
        client, vip, interval, max_seconds = self._args
        deadline = time.monotonic() + max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.replies.append(fetch(client, vip, timeout=1.0))
            self._stop.wait(interval)

    def __enter__(self) -> "Prober":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


class Stream:
    """A long-lived ``GET /stream?seconds=N`` connection; ``first`` is its first line (``b1 0``)."""

    def __init__(self, client: Host, vip: str, seconds: float, *, source: str | None = None) -> None:
        self.seconds = seconds
        self.sock = _socket(client, source)
        self.sock.settimeout(3.0)
        self.sock.connect((vip, 80))
        self.source, self.sport = self.sock.getsockname()[:2]
        self.sock.sendall(f"GET /stream?seconds={seconds:g} HTTP/1.0\r\nHost: {vip}\r\n\r\n".encode())
        self._data = b""
        while b"\r\n\r\n" not in self._data or b"\n" not in self._data.partition(b"\r\n\r\n")[2]:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self._data += chunk
        body = self._data.partition(b"\r\n\r\n")[2].decode(errors="replace")
        self.backend = body.split(" ", 1)[0] if body else None

    def finish(self, timeout: float = 10.0) -> tuple[bool, str]:
        """Read to the end: (True, "") if every line came, in order, from one backend; else (False, why)."""
        self.sock.settimeout(timeout)
        try:
            self._data += _read_all(self.sock)
        except OSError as error:
            return False, f"{error!r} after {self._lines()} lines"
        finally:
            self.sock.close()
        expected = [f"{self.backend} {i}" for i in range(round(self.seconds * STREAM_LINES_PER_SECOND))]
        got = self._data.partition(b"\r\n\r\n")[2].decode(errors="replace").splitlines()
        return (got == expected, "" if got == expected else f"{len(got)} of {len(expected)} lines: {got[-2:]}")

    def _lines(self) -> int:
        return self._data.partition(b"\r\n\r\n")[2].count(b"\n")

    def close(self) -> None:
        self.sock.close()


def open_streams(
    client: Host,
    vip: str,
    seconds: float,
    *,
    want: Iterable[str],
    sources: Sequence[str | None] = (None,),
    tries: int = 60,
) -> dict[str, Stream]:
    """One stream landed on each backend of ``want`` (new connections until each has one; others are closed)."""
    wanted, found = set(want), {}
    for i in range(tries):
        stream = Stream(client, vip, seconds, source=sources[i % len(sources)])
        if stream.backend in wanted and stream.backend not in found:
            found[stream.backend] = stream
        else:
            stream.close()
        if set(found) == wanted:
            return found
    for stream in found.values():
        stream.close()
    raise AssertionError(f"no stream landed on {sorted(wanted - set(found))} in {tries} tries")


def predict(
    vip: str, backends: Sequence[tuple[str, int]], *, source: str, sport: int, seed: int = 0, table_size: int = 16381
) -> int:
    """Index into ``backends`` (address, weight) that the reference Maglev table gives this TCP flow to port 80."""
    table = _table(tuple(backends), table_size)
    h = flowhash.flow_hash(ipaddress.ip_address(source), ipaddress.ip_address(vip), sport, 80, 6, seed=seed)
    return table[h % len(table)]


_TABLES: dict[Any, list[int]] = {}


def _table(backends: tuple[tuple[str, int], ...], size: int) -> list[int]:
    key = (backends, size)
    if key not in _TABLES:
        _TABLES[key] = maglev.build(list(backends), size)
    return _TABLES[key]


class FrameCapture:
    """AF_PACKET capture on the client's interface: (direction, source MAC, dest MAC, IPv4 src, dst, sport, dport)
    of every TCP frame, for proving where replies come from."""

    def __init__(self, client: Host) -> None:
        with client.entered():
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.sock.bind((client.ifname, 0))
        self.sock.settimeout(0.2)
        self.frames: list[tuple[str, str, str, str, str, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 30
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                frame, address = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
                continue
            ihl = (frame[14] & 0x0F) * 4
            sport, dport = struct.unpack("!HH", frame[14 + ihl : 18 + ihl])
            direction = "out" if address[2] == socket.PACKET_OUTGOING else "in"
            self.frames.append(
                (
                    direction,
                    frame[6:12].hex(":"),
                    frame[0:6].hex(":"),
                    socket.inet_ntoa(frame[26:30]),
                    socket.inet_ntoa(frame[30:34]),
                    sport,
                    dport,
                )
            )

    def __enter__(self) -> "FrameCapture":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.1)
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
