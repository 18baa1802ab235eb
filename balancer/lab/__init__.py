"""The namespace lab: ``xdplb demo``, the end-to-end and namespace tests, and the benchmarks build on it.

Nothing in the daemon imports it (an import-linter contract holds this); the CLI imports ``demo`` inside the
``xdplb demo`` verb only.

- ``netns``: the lab itself, a bridge and one network namespace per host (``Lab``, ``Host``);
- ``registry``: which namespaces belong to which run, so a crashed run's leftovers can be removed;
- ``sigterm``: SIGTERM as an exception, so a lab is torn down as on Ctrl-C;
- ``xdp``: the XDP_PASS program a veth peer needs for native XDP out of a lab host;
- ``http_backend``: the web server of a lab backend, answering its own name;
- ``forward``: a lab host's TCP port on this machine's 127.0.0.1;
- ``bird_lab``: a BIRD 2 router as the BGP peer;
- ``demo_lab``: the demo topology (client, router with BIRD, xdplb nodes, backends);
- ``demo``: ``xdplb demo`` on that topology;
- ``scale``: the scale lab of ``make bench-scale``.
"""

__all__: list[str] = []
