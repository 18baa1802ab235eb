"""The BIRD lab's reading of ``show protocols``."""

from balancer.lab import bird_lab


def _line(since: str) -> bird_lab.BirdProtocol:
    return bird_lab.BirdProtocol("xdplb4", "BGP", "---", "up", since, "Established")


def test_since_read_twice_of_one_change_is_the_same_within_birds_rounding() -> None:
    assert _line("03:38:23.259").same_since(_line("03:38:23.258"))
    assert _line("03:38:23.258").same_since(_line("03:38:23.258"))


def test_since_of_a_restart_differs() -> None:
    assert not _line("03:38:23.259").same_since(_line("03:38:23.300"))
    assert not _line("03:38:23.259").same_since(_line("04:38:23.259"))
