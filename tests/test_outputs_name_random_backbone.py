"""Every output file made from a randomly initialised backbone says so, and ablation plots show their differences."""
import json

import numpy as np
import pytest

from cache.store import random_backbone_note
from tests.conftest import synthetic_cache, write_episode
from train_head.ablate import axis_range, main as ablate_main, plot
from train_head.metrics import MetricsLog, plot_curves, read_metrics

RANDOM = "RANDOM weights (seed 0), not DINOv2 features"


def test_note_names_only_a_random_backbone():
    assert random_backbone_note({"backbone": "dinov2_vits14", "weights_label": RANDOM}) == (
        "backbone dinov2_vits14: " + RANDOM)
    assert random_backbone_note({"backbone": "dinov2_vits14", "weights_label": "official DINOv2 (sha 12ab)"}) == ""


def test_metrics_records_and_curves_title_carry_the_note(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsLog(path, note="backbone x: " + RANDOM) as log:
        log.log(1, train_loss=0.7)
        log.log(2, val_bce=0.6)
    records = read_metrics(path)
    assert [r["note"] for r in records] == ["backbone x: " + RANDOM] * 2
    assert [r["step"] for r in records] == [1, 2]
    with MetricsLog(tmp_path / "real.jsonl") as log:
        log.log(1, train_loss=0.7)
    assert "note" not in read_metrics(tmp_path / "real.jsonl")[0]
    plot_curves(path, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_ablation_axis_shows_close_values_and_prints_them(tmp_path):
    low, high = axis_range(np.array([0.427, 0.438]), np.array([0.0, 0.0]))
    assert 0.4 < low < 0.427 and 0.438 < high < 0.5
    assert axis_range(np.array([-5.0, 20.0]), np.array([1.0, 0.0]))[0] < -6.0  # negative rewards stay visible
    rows = [{"name": "a", "val_bce": 0.427, "val_exact_match": 0.5}, {"name": "b", "val_bce": 0.438,
                                                                      "val_exact_match": float("nan")}]
    fig = plot(rows, tmp_path / "abl.png", title="backbone x: " + RANDOM)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "0.427" in texts and "0.438" in texts and "0.500" in texts
    assert fig.axes[0].get_xlim()[0] > 0.4
    assert fig.get_suptitle() == "backbone x: " + RANDOM
    assert (tmp_path / "abl.png").stat().st_size > 1000


@pytest.fixture
def random_cache(tmp_path):
    paths = []
    for i in range(3):
        write_episode(tmp_path / f"e{i}.zarr", n=40, fps=10.0, shape=(8, 8, 3), seed=i)
        paths.append(tmp_path / f"e{i}.zarr")
    return synthetic_cache(tmp_path, paths, variants=("clean",), every=1, random_tokens=True, weights_label=RANDOM)


def test_ablation_files_and_run_metrics_name_the_random_backbone(random_cache, tmp_path, capsys):
    out = tmp_path / "abl"
    ablate_main(["--cache", str(random_cache.path), "--out", str(out), "--steps", "2", "--seeds", "0",
                 "--seq-len", "2", "--stride", "0.1", "--batch-size", "4", "--eval-every", "2", "--device", "cpu"])
    note = "backbone synthetic: " + RANDOM
    assert f"note: {note}" in (out / "ablation.md").read_text()
    rows = json.loads((out / "results.json").read_text())
    assert rows and all(row["note"] == note for row in rows)
    records = read_metrics(out / "default__lstm__patches__seq_3" / "seed0" / "metrics.jsonl")
    assert records and all(r["note"] == note for r in records)
