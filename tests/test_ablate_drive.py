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


def test_each_claim_gets_the_verdict_of_the_two_standard_error_rule_over_training_seeds():
    from drive.carracing.ablate import CONTROL, HUD_DISTORTED, NO_AUGMENTATION, verdicts
    rows = [{"name": "default (lstm, patches, seq 3, shift)", "seed_rewards": [400.0, 410.0, 420.0]},
            {"name": "seq 1", "seed_rewards": [300.0, 310.0, 320.0]},  # gap 100, se 8.2: confirmed
            {"name": HUD_DISTORTED, "seed_rewards": [500.0, 510.0, 520.0]},  # gap -100: refuted
            {"name": NO_AUGMENTATION, "seed_rewards": [395.0, 420.0, 400.0]},  # within 2 se: inconclusive
            {"name": CONTROL, "seed_rewards": [100.0]}]  # one seed: no verdict
    lines = {line.split(" | ")[0].lstrip("| "): line for line in verdicts(rows).splitlines()[2:]}
    assert "(400, 410, 420) vs (300, 310, 320)" in lines["a sequence of 3 beats 1"]
    assert lines["a sequence of 3 beats 1"].endswith("+100.0 / 8.2 = +12.2 standard errors: **confirmed** |")
    assert lines["keeping the HUD (minimap) out of augmentation beats distorting it"].endswith("**refuted** |")
    assert "inconclusive" in lines["augmentation (HUD kept) beats none"]
    assert "no verdict" in lines["the backbone adds over raw pixels"]
    assert lines["augmentation distorting the HUD beats none"].endswith(  # neither row is the default
        "(500, 510, 520) vs (395, 420, 400) | +105.0 / 9.6 = +11.0 standard errors: **confirmed** |")
    assert "a sequence of 3 beats 2" not in lines  # its row was not run


def test_no_augmentation_row_trains_on_clean_frames_only(tmp_path):
    from cache.sampler import SamplerSettings
    from train_head.ablate import Variation, apply_variation
    from train_head.train import TrainSettings
    base = TrainSettings(cache=tmp_path / "cache", out_dir=tmp_path / "run", sampler=SamplerSettings())
    clean = apply_variation(base, Variation("none", variant_weights=(("clean", 1.0),)), seed=2, out_dir=tmp_path / "x")
    assert clean.sampler.variant_weights == (("clean", 1.0),) and clean.sampler.seed == 2
    assert apply_variation(base, Variation("seq 1", seq_len=1), 0, tmp_path / "y").sampler.variant_weights is None


def test_skipping_an_unknown_row_is_refused_before_anything_runs(tmp_path):
    from tools.ablate_drive import main
    with pytest.raises(UserError, match="--skip grue: not a row that can be skipped; rows: seq 1, seq 2, gru"):
        main(["--demo", str(tmp_path / "demo"), "--out", str(tmp_path / "out"), "--skip", "grue"])
    assert not (tmp_path / "demo").exists() and not (tmp_path / "out").exists()
