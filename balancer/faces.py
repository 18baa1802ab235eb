"""The daemon's faces, put on it: the metrics observe it, the HTTP API (JSON, console, ``/metrics``) serves it.

The core knows none of them (an import contract holds it to that): it tells its ``observers`` what happens and
starts and stops its ``faces``; they read it through ``status.Controller``. The CLI's ``run`` and ``balance`` verbs,
and tests that want them, compose the three here::

    node = daemon.Daemon(config_path)
    collected = faces.attach(node)      # metrics observing node, and the API serving both
    await node.run()
"""

from balancer import api, daemon, metrics, version

__all__ = ["attach"]


def attach(node: daemon.Daemon, *, serve_api: bool = True) -> metrics.Metrics:
    """Give ``node`` its metrics and, with ``serve_api``, its HTTP API on the config's listen address (started
    after the core, stopped before it). Returns the metrics."""
    collected = metrics.Metrics(node, version=version.installed_version(), loop_probe=node.loop_probe)
    node.observers.append(collected)
    if serve_api:  # made when the daemon starts: the server binds the running config's api.listen
        node.face_factories.append(lambda started: api.ApiServer(started, metrics=collected))
    return collected
