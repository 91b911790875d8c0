"""make ablate-drive keeps every finished row, so an interrupted run continues where it stopped."""
import json

import pytest

from data.errors import UserError
from drive.carracing.ablate import kept_row

SETTINGS = {"game": "carracing_hood", "seeds": [0, 1], "tracks": [1000, 1001], "steps": 20}


def test_a_finished_row_is_kept_and_not_made_again(tmp_path):
    made = []

    def make(value):
        made.append(value)
        return {"name": "seq 1", "reward": value}

    logged = []
    assert kept_row(tmp_path, "seq 1", SETTINGS, lambda: make(5.0), logged.append) == {"name": "seq 1", "reward": 5.0}
    assert kept_row(tmp_path, "seq 1", SETTINGS, lambda: make(7.0), logged.append) == {"name": "seq 1", "reward": 5.0}
    assert made == [5.0] and logged == ["kept from an earlier run: seq 1"]
    assert json.loads((tmp_path / "rows" / "seq_1.json").read_text())["settings"] == SETTINGS


def test_an_interrupted_row_leaves_nothing_and_is_made_next_time(tmp_path):
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        kept_row(tmp_path, "gru", SETTINGS, interrupted)
    assert not (tmp_path / "rows").exists() or not list((tmp_path / "rows").iterdir())
    assert kept_row(tmp_path, "gru", SETTINGS, lambda: {"reward": 1.0}) == {"reward": 1.0}


def test_rows_of_other_settings_are_refused(tmp_path):
    kept_row(tmp_path, "gru", SETTINGS, lambda: {"reward": 1.0})
    with pytest.raises(UserError, match=r"rows/gru\.json: made with other settings"):
        kept_row(tmp_path, "gru", {**SETTINGS, "steps": 1000}, lambda: {"reward": 2.0})
