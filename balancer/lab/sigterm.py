"""SIGTERM as an exception, so ``with`` blocks and ``finally`` clauses tear a lab down as they do on Ctrl-C.

``netns.Lab`` raises ``SystemExit`` while a lab of its process is alive; ``xdplb demo`` raises its own stop
exception for the whole run. pyroute2 forks helper children, which inherit signal handlers: in those the handler
puts the default back and the child dies of the signal, as it would have without one.
"""

import os
import signal
from collections.abc import Callable
from types import FrameType

__all__ = ["Handler", "raising_handler"]

Handler = Callable[[int, FrameType | None], None]


def raising_handler(error: Callable[[int], BaseException], *, armed: Callable[[], bool] = lambda: True) -> Handler:
    """A handler that raises ``error(signum)`` in the process that made it while ``armed()``; elsewhere (a forked
    child) or once disarmed, the process dies of the signal the default way.

        signal.signal(signal.SIGTERM, raising_handler(lambda signum: SystemExit(128 + signum)))
    """
    owner = os.getpid()

    def handle(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner or not armed():
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise error(signum)

    return handle
