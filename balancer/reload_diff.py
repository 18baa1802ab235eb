"""What a reload changes, in words for the log and the API's answer."""

import config

__all__ = ["describe_changes"]


def describe_changes(old: config.XdplbConfig, new: config.XdplbConfig) -> list[str]:
    """``["service web2 added", "service web changed (+198.18.0.14 ~198.18.0.12)"]``, sorted."""
    old_services = {s.name: s for s in old.services}
    new_services = {s.name: s for s in new.services}
    changes = [f"service {name} added" for name in new_services.keys() - old_services.keys()]
    changes += [f"service {name} removed" for name in old_services.keys() - new_services.keys()]
    for name in old_services.keys() & new_services.keys():
        before, after = old_services[name], new_services[name]
        if before != after:
            old_backends = {b.address: b for b in before.backends}
            new_backends = {b.address: b for b in after.backends}
            parts = [f"+{a}" for a in new_backends.keys() - old_backends.keys()]
            parts += [f"-{a}" for a in old_backends.keys() - new_backends.keys()]
            parts += [f"~{a}" for a in old_backends.keys() & new_backends.keys() if old_backends[a] != new_backends[a]]
            changes.append(f"service {name} changed" + (f" ({' '.join(sorted(parts))})" if parts else ""))
    return sorted(changes)
