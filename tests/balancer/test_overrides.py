import json
from pathlib import Path

import pytest

import config
from balancer import overrides

DRAINED, DISABLED = config.AdminState.DRAINED, config.AdminState.DISABLED


def test_round_trip_keeps_only_backends_the_config_still_has(tmp_path: Path) -> None:
    path = tmp_path / "state" / "overrides.json"
    overrides.save(path, {"web/198.18.0.11": DRAINED, "web/198.18.0.12": DISABLED})
    assert json.loads(path.read_text()) == {"web/198.18.0.11": "drained", "web/198.18.0.12": "disabled"}
    assert overrides.load(path, ["web/198.18.0.11", "web/198.18.0.13"]) == {"web/198.18.0.11": DRAINED}
    assert [p.name for p in path.parent.iterdir()] == ["overrides.json"], "no temporary file left behind"


@pytest.mark.parametrize("text", ["{not json", '["web/198.18.0.11"]', '{"web/198.18.0.11": "sleeping"}'])
def test_an_unreadable_file_is_ignored_not_fatal(tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "overrides.json"
    path.write_text(text)
    assert overrides.load(path, ["web/198.18.0.11"]) == {}
    assert "event=overrides_unreadable" in caplog.text


def test_no_file_means_no_overrides(tmp_path: Path) -> None:
    assert overrides.load(tmp_path / "missing.json", ["web/198.18.0.11"]) == {}


def test_default_path_is_per_config_file(tmp_path: Path) -> None:
    a, b = overrides.default_path(tmp_path / "a.yaml"), overrides.default_path(tmp_path / "b.yaml")
    assert a != b and a.parent == b.parent == overrides.STATE_DIR
