"""ExaBGP's entry point as xdplb runs it: ``python _exabgp_main.py server CONF``, ExaBGP 5.0 with three changes.

The speaker runs this file, nothing imports it. ExaBGP 5.0 has no setting for any of the changes, so they are made
to its classes before its ``main()`` runs; each is checked by a test in tests/bgp against the installed ExaBGP.

- Connect retries back off to at most ``MAX_CONNECT_DELAY`` seconds, not 60: after a router outage of 125 s a
  session took 26.9 s to come back, because the next retry was that far away (ExaBGP never listens here).
- ``shutdown`` (the API command, SIGTERM) ends each established session with a Cease NOTIFICATION, subcode 2
  (Administrative Shutdown), instead of a bare FIN: the router then logs why the session went down.
- A ``reload`` that fails to parse cleans the parser up: ExaBGP 5.0.15 kept the half-parsed state, so every later
  reload failed too ('a process section called "xdplb" already exists') until ExaBGP restarted.
"""

import os
import sys
import time
from typing import Any

MAX_CONNECT_DELAY = 5


def patch() -> None:
    """Make the changes to ExaBGP's classes."""
    from exabgp.bgp.fsm import FSM
    from exabgp.bgp.message import Notify
    from exabgp.configuration.configuration import Configuration
    from exabgp.reactor import delay, loop

    def increase(self: Any) -> None:
        self._time = time.time() + self._next
        self._next = min(int(1 + self._next * 1.2), MAX_CONNECT_DELAY)

    shutdown = loop.Reactor.shutdown

    def notify_shutdown(self: Any) -> None:
        # ExaBGP's loop exits right after shutdown(): the peers get no further turn, so say it here.
        for peer in list(self._peers.values()):
            if peer.proto is None or peer.fsm != FSM.ESTABLISHED:
                continue
            try:
                for attempt, _ in enumerate(peer.proto.new_notification(Notify(6, 2))):
                    if attempt > 1000:  # the socket does not drain: leave it to the close
                        break
            except Exception:  # noqa: BLE001 - a session already broken has nobody to tell
                continue
        shutdown(self)

    rollback = Configuration._rollback_reload

    def rollback_and_clean(self: Any) -> None:
        rollback(self)
        self._cleanup()

    delay.Delay.increase = increase
    loop.Reactor.shutdown = notify_shutdown
    Configuration._rollback_reload = rollback_and_clean


def main() -> None:
    """Patch ExaBGP, then run it with this process's arguments."""
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0]) == here:
        del sys.path[0]  # this directory holds the bgp package's private modules, not ExaBGP's
    patch()
    from exabgp.application.main import main as exabgp_main

    exabgp_main()


if __name__ == "__main__":
    main()
