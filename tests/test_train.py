"""The training loop on small caches: it learns, checkpoints what drive needs, resumes, refuses mix-ups."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cache.sampler import SamplerSettings
from data.errors import UserError
from data.split import SplitSettings
from tests.conftest import synthetic_cache, write_episode
from train_head.checkpoint import load_checkpoint
from train_head.heads import HeadSettings
from train_head.metrics import read_metrics
from train_head.optim import OptimSettings
from train_head.train import TrainSettings, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path):
    paths = []
    for i in range(3):
        path = tmp_path / f"e{i}.zarr"
        write_episode(path, n=40, fps=10.0, shape=(8, 8, 3), seed=i)
        paths.append(path)
    return synthetic_cache(tmp_path, paths, variants=("clean",), every=1, random_tokens=True)


def settings(cache, out, steps=40, **kw):
    return TrainSettings(cache=cache.path, out_dir=out, head=HeadSettings(hidden=32, mlp_hidden=32),
                         sampler=SamplerSettings(seq_len=2, stride_s=0.1, batch_size=16),
                         optim=OptimSettings(lr=3e-3, min_lr=3e-4, warmup_steps=5, max_steps=steps),
                         split=SplitSettings(val_fraction=0.34, seed=0), eval_every=20, quiet=True, **kw)


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_overfits_a_tiny_cache(cache, tmp_path, kind):
    s = settings(cache, tmp_path / "run", steps=300)
    s.head = HeadSettings(kind=kind, hidden=32, mlp_hidden=32, depth=2, width=32, heads=4)
    s.split = SplitSettings(val_fraction=0.0)  # everything in train: memorise it
    train(s)
    losses = [r["train_loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "train_loss" in r]
    assert losses[0] > 0.5 and losses[-1] < 0.05


def test_checkpoints_hold_what_drive_needs_and_resume(cache, tmp_path):
    out = tmp_path / "run"
    best = train(settings(cache, out, steps=40))
    assert best["step"] in (20, 40) and 0 < best["val_bce"] < 2
    for name in ("best.pt", "last.pt", "curves.png", "metrics.jsonl"):
        assert (out / name).exists(), name
    ckpt = torch.load(out / "last.pt", weights_only=True)
    s = ckpt["settings"]
    assert ckpt["fingerprint"] == cache.fingerprint and ckpt["step"] == 40
    t = s["sampler"]  # the timing is stored once, in the sampler settings of the contract
    assert t["seq_len"] == 2 and t["stride_s"] == 0.1 and t["label_shift_s"] == 0.0
    assert s["head"]["grid"] == (2, 3) and s["head"]["channels"] == 4 and s["backbone"] == "synthetic"
    assert {"preprocess", "reduction", "controller", "weights_digest", "profile"} <= s.keys()

    resumed = settings(cache, out, steps=60)
    resumed.resume = True
    train(resumed)
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl")]
    assert steps == sorted(steps) and steps[-1] == 60 and steps.count(40) == 1  # continued, not restarted
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 60


def test_resume_on_another_cache_is_refused(cache, tmp_path):
    out = tmp_path / "run"
    train(settings(cache, out, steps=20))
    write_episode(tmp_path / "other" / "x.zarr", n=40, fps=10.0, shape=(8, 8, 3))
    other = synthetic_cache(tmp_path / "other", [tmp_path / "other" / "x.zarr"], variants=("clean",), every=1, channels=5)
    s = settings(other, out, steps=40)
    s.resume = True
    with pytest.raises(UserError, match="trained on feature cache"):
        train(s)
    with pytest.raises(UserError, match="trained on feature cache"):
        load_checkpoint(out / "best.pt", expected_fingerprint=other.fingerprint)


def test_cli_one_line_errors(tmp_path):
    r = subprocess.run([sys.executable, "-m", "train_head", "--cache", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "not a feature cache" in r.stderr
    r = subprocess.run([sys.executable, "-m", "train_head", "--cache", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
                        "--steer-gain", "0"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr == "error: --steer-gain 0.0: must be > 0\n"
    r = subprocess.run([sys.executable, "-m", "train_head", "--cache", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
                        "--head", "transformer", "--transformer-width", "100", "--transformer-heads", "3"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr == ("error: transformer width 100 (--transformer-width) must be a multiple "
                                              "of its 3 heads (--transformer-heads)\n")
    assert not (tmp_path / "o").exists()


def test_ablation_grid_trains_each_setting_with_the_same_seeds(cache, tmp_path):
    from train_head.ablate import Variation, markdown_table, plot, run_grid

    grid = [Variation("default"), Variation("seq 1", seq_len=1), Variation("cls only", tokens="cls")]
    rows = run_grid(settings(cache, tmp_path, steps=8), grid, seeds=[0, 1], out=tmp_path / "abl", log=lambda *a: None)
    assert [r["name"] for r in rows] == ["default", "seq 1", "cls only"]
    for row in rows:
        assert [r["seed"] for r in row["runs"]] == [0, 1]
        values = [r["val_bce"] for r in row["runs"]]
        assert row["val_bce"] == pytest.approx(sum(values) / 2)
    seq1 = torch.load(tmp_path / "abl" / "seq_1" / "seed0" / "best.pt", weights_only=True)["settings"]
    assert seq1["sampler"]["seq_len"] == 1 and seq1["head"]["tokens"] == "patches"
    cls = torch.load(tmp_path / "abl" / "cls_only" / "seed1" / "best.pt", weights_only=True)["settings"]
    assert cls["head"]["tokens"] == "cls" and cls["sampler"]["seed"] == 1
    table = markdown_table(rows).splitlines()
    assert len(table) == 5 and table[2].startswith("| default | ") and "±" in table[2]
    plot(rows, tmp_path / "abl.png")
    assert (tmp_path / "abl.png").stat().st_size > 1000
