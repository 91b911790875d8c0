"""Per-kind sample weights: corrections (or any episode kind) count more in the loss; stored in the checkpoint."""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cache.sampler import SamplerSettings, SequenceSampler
from data.episode import EpisodeMeta, EpisodeWriter
from data.errors import UserError
from data.split import Segment, SplitSettings
from tests.conftest import synthetic_cache, synthetic_frames
from train_head.heads import HeadSettings
from train_head.metrics import read_metrics
from train_head.optim import OptimSettings
from train_head.train import TrainSettings, parse_kind_weights, train, weighted_bce

ROOT = Path(__file__).resolve().parents[1]


def two_kinds(tmp_path):
    """The same 40 frames twice: a regular episode that never presses a key, a correction that presses all four."""
    paths = []
    for kind, value in (("regular", 0), ("correction", 1)):
        path = tmp_path / f"{kind}.zarr"
        with EpisodeWriter(path, (8, 8, 3), EpisodeMeta(fps=10.0, kind=kind)) as w:
            w.append(synthetic_frames(40, (8, 8, 3)), np.full((40, 4), value, np.uint8), np.arange(40) / 10)
        paths.append(path)
    return paths, synthetic_cache(tmp_path, paths, variants=("clean",), every=1)


@pytest.mark.parametrize("mode", ["ram", "stream"])
def test_each_batch_carries_its_samples_kind_weight(tmp_path, mode):
    paths, cache = two_kinds(tmp_path)
    settings = SamplerSettings(seq_len=2, stride_s=0.1, batch_size=16, mode=mode, kind_weights=(("correction", 3.0),))
    sampler = SequenceSampler(cache, [Segment(p, 0, 40) for p in paths], settings)
    n = 0
    for batch in sampler.epoch(0):
        kinds = [sampler.kinds[e] for e in batch.ids[:, 0]]
        assert batch.weights.tolist() == [3.0 if k == "correction" else 1.0 for k in kinds]
        assert torch.equal(batch.keys[:, 0], (batch.weights == 3.0).float())  # the correction's labels are 1
        n += len(kinds)
    assert n == len(sampler) == 2 * 39


def test_a_weight_of_three_counts_a_sample_three_times():
    torch.manual_seed(0)
    logits, keys = torch.randn(4, 4), torch.randint(0, 2, (4, 4)).float()
    assert weighted_bce(logits, keys, weights=torch.ones(4)).item() == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, keys).item(), rel=1e-6)
    tripled = torch.cat([logits, logits[:1], logits[:1]]), torch.cat([keys, keys[:1], keys[:1]])
    assert weighted_bce(logits, keys, weights=torch.tensor([3.0, 1, 1, 1])).item() == pytest.approx(
        F.binary_cross_entropy_with_logits(*tripled).item(), rel=1e-6)


def train_on_two_kinds(tmp_path, cache, kind_weights, out):
    s = TrainSettings(cache=cache.path, out_dir=tmp_path / out, head=HeadSettings(hidden=16, mlp_hidden=16),
                      sampler=SamplerSettings(seq_len=2, stride_s=0.1, batch_size=16, kind_weights=kind_weights),
                      optim=OptimSettings(lr=3e-3, min_lr=3e-4, warmup_steps=5, max_steps=150),
                      split=SplitSettings(val_fraction=0.0), eval_every=150, quiet=True)
    train(s)
    losses = [r["train_loss"] for r in read_metrics(s.out_dir / "metrics.jsonl") if "train_loss" in r]
    return float(np.mean(losses[-2:])), torch.load(s.out_dir / "last.pt", weights_only=True)


def test_training_follows_the_kind_weights_and_stores_them(tmp_path):
    # identical inputs, opposite labels: unweighted the head can only answer 0.5 (loss ln 2);
    # with regular episodes weighted 0 it learns the corrections' keys
    paths, cache = two_kinds(tmp_path)
    plain, _ = train_on_two_kinds(tmp_path, cache, (), "plain")
    only_corrections, ckpt = train_on_two_kinds(tmp_path, cache, (("regular", 0.0), ("correction", 3.0)), "weighted")
    assert plain > 0.6 and only_corrections < 0.05
    assert math.log(2) == pytest.approx(plain, abs=0.05)
    assert [tuple(kw) for kw in ckpt["settings"]["sampler"]["kind_weights"]] == [("regular", 0.0), ("correction", 3.0)]


def test_kind_weight_flag_parsing_and_its_one_line_errors(tmp_path):
    assert parse_kind_weights(["correction=3", "stuck=0.5", "correction=2"]) == (("correction", 2.0), ("stuck", 0.5))
    for bad in ("correction", "=3", "correction=x", "correction=-1", "correction=inf"):
        with pytest.raises(UserError, match="--kind-weight"):
            parse_kind_weights([bad])
    r = subprocess.run([sys.executable, "-m", "train_head", "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "o"),
                        "--kind-weight", "correction=x"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: --kind-weight 'correction=x'") and r.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()
