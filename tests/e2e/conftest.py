"""End-to-end tests of the whole system in the demo lab (``balancer.lab.demo_lab``): real ``xdplb run`` children,
XDP, ExaBGP, a BIRD router installing routes in its namespace's kernel, real HTTP backends.

Figures measured along the way (failover, route withdrawal, node loss) are printed in the terminal summary.
"""

from typing import Any

from tests.e2e.support import FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("xdplb end-to-end figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")
