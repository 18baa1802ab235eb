"""Changing the config of a running ExaBGP: check it in a throwaway ``exabgp validate``, write it, have ExaBGP reload.

ExaBGP acks the ``reload`` command at once and reloads at its next turn, logging whether it worked
(exabgp/reactor/loop.py); on a parse error it rolls its configuration back and keeps its sessions. Example::

    await validate(exabgp_argv, workdir / "exabgp.conf.check", text, secrets={"pw"}, timeout=20)
    await reload(run, workdir / "exabgp.conf", text, secrets={"pw"}, command_timeout=5)
"""

import asyncio
import logging
import os
import time
from collections.abc import Collection, Sequence
from pathlib import Path

from bgp import _channel, _errors, _exabgp_config, _runtime

__all__ = ["reload", "validate", "write"]

log = logging.getLogger(__name__)

# What ExaBGP logs after a reload, and how long to wait for it before asking again.
_OK = "loaded new configuration successfully"
_FAILED = "could not load/reload configuration"
_WAIT = 1.0
PATIENCE = 15.0  # > _exabgp_main.MAX_CONNECT_DELAY: see reload()


def write(path: Path, text: str) -> None:
    """Replace the file at ``path`` with ``text`` at once: ExaBGP reads it at a reload or a restart, never half of
    it."""
    _runtime.replace_private(path, text)


async def validate(exabgp: Sequence[str], path: Path, text: str, *, secrets: Collection[str], timeout: float) -> None:
    """ReconfigureError if ``exabgp validate`` (``exabgp`` is its argv prefix) refuses ``text``, written to ``path``
    for the check and removed after; ``secrets`` never appear in the error."""
    _runtime.replace_private(path, text)
    try:
        process = await asyncio.create_subprocess_exec(
            *exabgp, "validate", os.fspath(path),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=_exabgp_config.environment(os.environ),
        )  # fmt: skip
        try:
            async with asyncio.timeout(timeout):
                output, _ = await process.communicate()
        except BaseException:
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
    except TimeoutError:
        raise _errors.ReconfigureError(f"exabgp validate took over {timeout:g}s") from None
    except OSError as error:
        raise _errors.ReconfigureError(f"cannot run exabgp validate: {error}") from error
    finally:
        path.unlink(missing_ok=True)
    if process.returncode != 0:
        lines = [line.strip() for line in output.decode(errors="replace").splitlines() if line.strip()]
        raise _errors.ReconfigureError(f"exabgp refused the new config: {_redact(' | '.join(lines[-4:]), secrets)}")


async def reload(
    run: _channel.ExabgpRun, path: Path, text: str, *, secrets: Collection[str], command_timeout: float
) -> None:
    """Write ``text`` to ``path`` (the file ``run`` was started with) and have ExaBGP reload it; ReconfigureError if
    it refuses it or does not do it.

    ExaBGP silently skips a reload while UPDATEs wait to be sent to any peer, a peer that is down included (until
    its next connect retry, at most 5 s away with _exabgp_main's cap), so an unanswered one is asked again, for up
    to ``PATIENCE`` seconds (or ``command_timeout`` if longer).
    """
    write(path, text)
    patience = max(command_timeout, PATIENCE)
    deadline = time.monotonic() + patience
    while True:
        outcome = run.expect_output(_OK, _FAILED)
        try:
            await run.command("reload", timeout=command_timeout)
            async with asyncio.timeout(max(0.0, min(_WAIT, deadline - time.monotonic()))):
                line = await asyncio.shield(outcome)
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise _errors.ReconfigureError(f"exabgp did not reload its config within {patience:g}s") from None
            log.info("event=exabgp_reload_unanswered next=ask_again")
            continue
        finally:
            outcome.cancel()
        if _OK in line:
            return
        await asyncio.sleep(0.05)  # the reason follows on the next lines
        reason = run.last_output.rsplit(_FAILED, 1)[-1].strip(" |")
        raise _errors.ReconfigureError(f"exabgp refused the new config: {_redact(reason, secrets)}")


def _redact(text: str, secrets: Collection[str]) -> str:
    for secret in secrets:  # ExaBGP may quote the line it failed on
        text = text.replace(secret, "<secret>")
    return text[:500]
