"""The scale lab, small (100 services x 10 backends): every behaviour ``make bench-scale`` measures at full size.

Every server stays healthy, so: every backend comes up and every VIP reaches BIRD; no backend goes down in a
steady window; a reload that moves 1% of the backends, and one that changes a service's checks, move no other
backend; a clean stop leaves no route in BIRD. The figures belong to the benchmark, not here.
"""

import pytest

from balancer.lab import scale
from tests.e2e.support import record, require_e2e

pytestmark = pytest.mark.privileged


def test_a_hundred_services_of_ten_backends_come_up_stay_up_and_reload_without_flaps() -> None:
    require_e2e()
    with scale.ScaleLab(services=100, backends=10, spare=10) as lab:
        figures = scale.measure(lab, window=10.0, settle=2.0, flap_window=8.0)
        errors = lab.node.errors()
    record("scale lab 100 x 10", scale.to_json(figures))
    assert figures["false_downs"] == 0
    assert figures["reload_flaps"] == 0, "unchanged backends kept their state through both reloads"
    assert figures["routes_left_in_bird"] == 0, "a clean stop withdrew every VIP"
    assert figures["metrics_series"] > 0
    assert errors == [], errors[:5]
