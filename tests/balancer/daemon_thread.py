"""Run the real daemon on its own event loop in a thread that lives in a lab host's network namespace."""

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from balancer import daemon, faces, status
from balancer.lab.netns import Host

T = TypeVar("T")


class DaemonThread:
    """``start()`` runs ``Daemon.run()`` inside ``host``'s namespace; ``call()`` runs code on the daemon's loop.
    With ``serve_api`` the daemon gets its faces (metrics and the HTTP API), as ``xdplb run`` gives them."""

    def __init__(self, host: Host, config_path: Path, *, serve_api: bool = False, **options: Any) -> None:
        self.host = host
        self.config_path = config_path
        self.options = options
        self.serve_api = serve_api
        self.daemon: daemon.Daemon | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="xdplb-daemon", daemon=True)

    def _main(self) -> None:
        with self.host.entered():
            loop = asyncio.new_event_loop()
            self.loop = loop
            try:
                self.daemon = daemon.Daemon(self.config_path, **self.options)
                if self.serve_api:
                    faces.attach(self.daemon)
                self._started.set()
                loop.run_until_complete(self.daemon.run(handle_signals=False))
            except BaseException as error:
                self.error = error
            finally:
                self._started.set()
                loop.close()

    def start(self, *, ready_timeout: float = 60.0) -> None:
        """Start the thread and wait until the daemon is ready; the daemon's own error if it died instead."""
        self._thread.start()
        self._started.wait(30)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.error is not None or not self._thread.is_alive():
                raise RuntimeError(f"the daemon stopped before it was ready: {self.error!r}") from self.error
            if self.daemon is not None and self.daemon.ready_event.is_set():
                return
            time.sleep(0.05)
        raise TimeoutError(f"the daemon was not ready within {ready_timeout} s")

    def call(self, make: Callable[[daemon.Daemon], Coroutine[Any, Any, T]], *, timeout: float = 30.0) -> T:
        assert self.loop is not None and self.daemon is not None
        if self.error is not None:
            raise self.error
        future = asyncio.run_coroutine_threadsafe(make(self.daemon), self.loop)
        return future.result(timeout)

    def snapshot(self) -> status.Snapshot:
        async def take(d: daemon.Daemon) -> status.Snapshot:
            return d.snapshot()

        return self.call(take)

    def stop(self, *, timeout: float = 30.0) -> None:
        if self.loop is not None and self.daemon is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.daemon.stop_trigger.set)
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
