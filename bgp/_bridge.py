"""ExaBGP's API process: relays between ExaBGP's pipes and the xdplb daemon's Unix socket.

ExaBGP runs this file (``python _bridge.py SOCKET``); it uses the standard library only, and the daemon imports
nothing from it.
Whatever kills the daemon closes its end of the socket, and the bridge then tells ExaBGP to ``shutdown`` so no
route outlives its controller (ExaBGP alone would keep them announced). It also dies with ExaBGP (PDEATHSIG), and
ExaBGP is run with ``api.terminate`` so that the bridge's death ends ExaBGP.
"""

import ctypes
import os
import selectors
import signal
import socket
import sys
import time

__all__ = ["die_with", "main"]

_PR_SET_PDEATHSIG = 1
_CONNECT_TIMEOUT = 5.0
_libc = ctypes.CDLL(None, use_errno=True)


def die_with(parent: int) -> bool:
    """Have the kernel SIGKILL this process when its parent dies (PR_SET_PDEATHSIG); False if that failed or
    ``parent`` is gone already (it died before the setting took effect: this process has another parent).

    The bridge calls it as it starts (ExaBGP itself gets its PDEATHSIG from ``setpriv``: ``_channel``).
    """
    return _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) == 0 and os.getppid() == parent


def _connect(path: str) -> socket.socket | None:
    deadline = time.monotonic() + _CONNECT_TIMEOUT
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main(argv: list[str]) -> int:
    """Relay until either side closes; on the daemon's side closing, ask ExaBGP to shut down."""
    if not die_with(os.getppid()):
        os._exit(1)
    sock = _connect(argv[1])
    if sock is None:
        _write_all(1, b"shutdown\n")
        return 1
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    selector.register(sock, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj == 0:
                data = os.read(0, 65536)
                if not data:  # ExaBGP is gone
                    return 0
                try:
                    sock.sendall(data)
                except OSError:  # the daemon is gone
                    _write_all(1, b"shutdown\n")
                    return 0
            else:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:  # the daemon is gone, or stopping: withdraw everything with the session
                    _write_all(1, b"shutdown\n")
                    return 0
                _write_all(1, data)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
