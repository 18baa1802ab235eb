"""Put the XDP program back on an interface that lost it: after a NIC reset, a re-created or renamed interface, or
another program attached in its place.

Some NICs drop their XDP program when the link renegotiates (an X710 after ``ethtool -r``); a driver reload or a
re-created veth comes back under the same name with a new ifindex and no program. ``plan()`` compares what the
data plane attached (``Attachment``: name, mode, ifindex then) with what the kernel shows now
(``link_watcher.Link``) and says what to do, without I/O. ``Reattacher.ensure()`` confirms with a fresh read of the
links and does it; the daemon calls it from its reconcile loop, so the data plane keeps one writer. Each re-attach
is logged (``event=xdp_reattached interface=... reason=...``) and counted by interface and reason
(``xdplb_xdp_reattach_total``).

Reasons:

- ``xdp_missing``: same interface, no program in our mode (a NIC reset, ``ip link set dev X xdp off``);
- ``xdp_replaced``: same interface, another program attached (replaced back if it is in our mode; one in the
  other mode makes the attach fail, which is logged and retried, never forced);
- ``recreated``: the name is back with a new ifindex and the old interface is gone (driver reload, veth re-made);
- ``renamed``: the interface we attached to now has another name. The program is detached from it (it no longer
  carries the configured name, and a netlink-attached program outlives the daemon) and attached to whatever
  interface has the configured name, now or when one appears (itself, renamed back, counts as ``renamed`` too).

An interface that is gone is waited for: its return is a link event.
"""

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping

import bpf
from balancer import link_watcher

__all__ = ["REASONS", "Action", "Attachment", "Reattacher", "plan"]

log = logging.getLogger(__name__)

REASONS = ("recreated", "renamed", "xdp_missing", "xdp_replaced")
"""Every ``reason`` label of ``xdplb_xdp_reattach_total``."""


@dataclasses.dataclass(frozen=True)
class Attachment:
    """An interface the data plane attached to: its configured name, the mode used and its ifindex then."""

    name: str
    mode: str  # native | generic
    ifindex: int


@dataclasses.dataclass(frozen=True)
class Action:
    """Attach to ``interface`` again because of ``reason``; or, with ``release``, detach from that device (the
    interface we attached to, renamed away from ``interface``)."""

    interface: str
    reason: str
    release: str | None = None


def plan(attachments: Mapping[str, Attachment], links: Mapping[int, link_watcher.Link], prog_id: int) -> list[Action]:
    """What to do so that every attached interface runs program ``prog_id`` again; empty while all do.

    >>> eth0 = Attachment("eth0", "native", 4)
    >>> plan({"eth0": eth0}, {4: link_watcher.Link(4, "eth0", {})}, 17)
    [Action(interface='eth0', reason='xdp_missing', release=None)]
    >>> plan({"eth0": eth0}, {9: link_watcher.Link(9, "eth0", {})}, 17)
    [Action(interface='eth0', reason='recreated', release=None)]
    """
    by_name = {link.name: link for link in links.values()}
    actions = []
    for name, attachment in sorted(attachments.items()):
        current = by_name.get(name)
        before = links.get(attachment.ifindex)
        if before is not None and before.name != name:  # renamed away, perhaps another interface took the name
            if before.xdp.get(attachment.mode) == prog_id:
                actions.append(Action(name, "renamed", release=before.name))
            if current is not None:
                actions.append(Action(name, "renamed"))
            continue
        if current is None:
            continue  # gone: its return is a link event
        if current.ifindex != attachment.ifindex:
            actions.append(Action(name, "recreated"))
        elif current.xdp.get(attachment.mode) != prog_id:
            actions.append(Action(name, "xdp_replaced" if current.xdp else "xdp_missing"))
    return actions


class Reattacher:
    """Applies ``plan()`` to a loaded ``bpf.DataPlane``; ``counts`` holds the re-attaches by interface and reason.

    Only the data plane's writer calls ``ensure()``, one call at a time.
    """

    def __init__(self, plane: bpf.DataPlane, watcher: link_watcher.LinkWatcher) -> None:
        self.plane = plane
        self.watcher = watcher
        self.counts: dict[str, dict[str, int]] = {}
        self._gone: set[str] = set()
        self._errors: dict[str, str] = {}  # the last error per interface, logged once
        self._prog_id = plane.prog_id  # the program never changes while the data plane is loaded
        self._renamed: set[str] = set()  # released after a rename: the name's next attach counts as "renamed"
        self._since: float | None = None  # when the link change that called for action was read (monotonic)

    def attachments(self) -> dict[str, Attachment]:
        """What the data plane attached, as ``plan()`` takes it (not an interface prepared for a takeover, where an
        earlier run's program still forwards)."""
        modes = self.plane.attached
        return {
            name: Attachment(name, modes[name], ifindex)
            for name, ifindex in self.plane.attached_ifindexes.items()
            if name in modes
        }

    def pending(self) -> bool:
        """Whether the links last seen call for an action (cheap: no I/O); logs an attached interface going away."""
        attachments = self.attachments()
        links = self.watcher.links()
        names = {link.name for link in links.values()}
        for name in sorted(attachments.keys() - names - self._gone):
            log.warning("event=xdp_interface_gone interface=%s action=attach_when_back", name)
        self._gone = attachments.keys() - names
        if not plan(attachments, links, self._prog_id):
            return False
        if self._since is None:
            self._since = self.watcher.changed_at
        return True

    async def ensure(self, modes: Mapping[str, bpf.AttachMode]) -> tuple[bool, bool]:
        """Read the links afresh and act on ``plan()``; ``modes`` are the configured attach modes, by interface.

        Returns (whether anything was attached, whether an action failed: the caller tries again later).
        """
        try:
            links = await asyncio.to_thread(self.watcher.resync)
        except Exception as error:  # netlink refused a dump: not worth stopping the daemon; try again later
            log.error("event=link_dump_failed error=%s action=retry", error)
            return False, True
        attachments = self.attachments()
        attached = failed = False
        for action in plan(attachments, links, self._prog_id):
            name = action.interface
            try:
                if action.release is not None:
                    await asyncio.to_thread(self.plane.release, action.release, attachments[name].mode)
                    log.info("event=xdp_released interface=%s renamed_from=%s", action.release, name)
                    self._renamed.add(name)
                    continue
                mode = await asyncio.to_thread(self.plane.attach, name, modes.get(name, "auto"))
            except bpf.DataPlaneError as error:
                failed = True
                if self._errors.get(name) != str(error):
                    self._errors[name] = str(error)
                    log.error("event=xdp_reattach_failed interface=%s reason=%s error=%s action=retry",
                              name, action.reason, error)  # fmt: skip
                continue
            self._errors.pop(name, None)
            attached = True
            reason = "renamed" if name in self._renamed else action.reason  # renamed back, say
            self._renamed.discard(name)
            by_reason = self.counts.setdefault(name, {})
            by_reason[reason] = by_reason.get(reason, 0) + 1
            log.warning(
                "event=xdp_reattached interface=%s reason=%s mode=%s ifindex=%d seconds_since_link_event=%.3f",
                name, reason, mode, self.plane.attached_ifindexes.get(name, 0),
                time.monotonic() - (self._since or self.watcher.changed_at),
            )  # fmt: skip
        if not failed:
            self._since = None
        return attached, failed
