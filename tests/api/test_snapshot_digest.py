"""``build_snapshot`` digests a config once, not on every snapshot."""

from balancer import snapshot
from tests.api import fake_controller


def test_the_digest_is_computed_once_per_config_object() -> None:
    first, second = fake_controller.load(), fake_controller.load(listen="127.0.0.1:9181")
    assert snapshot._digest(first) == first.digest()
    assert snapshot._digested[0][0] is first
    assert snapshot._digest(first) == first.digest()
    assert snapshot._digest(second) == second.digest() != first.digest()
    assert snapshot._digested[0][0] is second  # only the last one is kept
