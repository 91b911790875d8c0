"""make bench: a quick run with a tiny backbone writes every figure and cleans up after itself."""
import json

import pytest
import torch

from data.errors import UserError
from extract_features.device import fast_bf16, precision_name
from tools.bench.suite import FIGURES, main
from tools.bench.scale import default_geometry


def test_quick_bench_writes_every_figure(tmp_path):
    out = tmp_path / "bench"
    threads = torch.get_num_threads()
    try:
        main(["--quick", "--backbones", "vit_tiny_test", "--p3-gb", "0.01", "--threads", "1", "--out", str(out),
              "--scale", "--scale-sizes", "0.1"])
    finally:
        torch.set_num_threads(threads)
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md"]  # inputs deleted
    results = json.loads((out / "results.json").read_text())
    f = results["figures"]
    assert list(f) == list(FIGURES) and results["quick"] and results["machine"]["device"] == "cpu"

    timed = f["backbone"]["backbones"]["vit_tiny_test"]
    assert timed["fp32_ms_per_frame"] > 0 and timed["bf16_ms_per_frame"] > 0
    assert 0 < timed["bf16_rel_err_patch"] < 0.1  # bf16 tokens are close to fp32, not equal
    assert timed["int8_ms_per_frame"] > 0 and 0 < timed["int8_rel_err_patch"] < 0.1  # so are dynamic int8 ones
    assert f"{timed['int8_ms_per_frame']:.1f} | {timed['int8_rel_err_patch']:.1e}" in (out / "results.md").read_text()
    for name, pair in {"stage1": ("pipeline_frames_per_s", "backbone_frames_per_s"),
                       "p1": ("cache_samples_per_s", "seed_samples_per_s"),
                       "p3": ("sampler_bytes_per_s", "plain_bytes_per_s"),
                       "p4": ("ring_decisions_per_s", "recompute_decisions_per_s")}.items():
        ratio = f[name]["efficiency" if name in ("stage1", "p3") else "speedup"]
        assert f[name][pair[0]] > 0 and f[name][pair[1]] > 0
        assert ratio == pytest.approx(f[name][pair[0]] / f[name][pair[1]])
    assert f["p1"]["batch"] == 4 and f["p3"]["samples"] > 0
    # scale: a 0.1 GB cache of the defaults' geometry (whole blocks), read and trained on in a child process
    scaled, geometry = f["scale"]["sizes"]["0.1"], default_geometry()
    assert scaled["cache_bytes"] == scaled["rows"] * geometry.grid[0] * geometry.grid[1] * geometry.channels * 2 >= 0.1e9
    assert scaled["samples"] > 3 * scaled["batch"] and scaled["train_steps"] == 3  # --scale-steps: 3 when quick
    assert scaled["capped"] and scaled["train_epoch_s"] > 0 and scaled["read_efficiency"] > 0
    assert 0 < scaled["peak_rss_bytes"] and 0 < scaled["index_bytes_per_sample"] < 100
    # every figure runs in the precision this CPU is fast at, and says which
    fast = precision_name(fast_bf16("cpu"))
    assert results["machine"]["precision"] == fast
    assert f["stage1"]["precision"] == f["p1"]["precision"] == f["p4"]["precision"] == fast

    # 13x18 patches of 48 channels: the exact bytes stage 1 stores per frame
    sizes = f["cache_bytes"]["backbones"]["vit_tiny_test"]
    assert sizes["grid"] == [13, 18]
    fp16, int8, pca = (sizes["reductions"][k]["arrays"] for k in ("fp16", "int8", "pca"))
    assert fp16 == {"patch": 234 * 48 * 2, "cls": 48 * 2}
    assert int8 == {"patch": 234 * 48, "scale": 234 * 2, "cls": 48 * 2}
    assert pca == {"patch": 234 * sizes["pca_dim"] * 2, "cls": 48 * 2}

    for name in ("idle", "busy"):  # 40 releases of a or d each; never before their time (values: the machine's)
        keys = f["key_release"][name]
        assert keys["releases"] == 40 and keys["early_ms"] == 0
        assert 0 <= keys["median_ms"] <= keys["p99_ms"] <= keys["max_ms"]

    md = (out / "results.md").read_text()
    for text in ("Key release time error", "Stage-1 efficiency", "P1", "P3", "P4", "ms/frame", "int8", results["machine"]["cpu"], "RANDOM weights",
                 "Scale: one stream-mode training epoch", "| 0.1: 0.1 GB",
                 f"Precision: {fast} ("):
        assert text in md


@pytest.mark.parametrize("argv, flag", [(["--skip", "p2"], "--skip"), (["--p3-gb", "0"], "--p3-gb"),
                                        (["--backbones", "vit_huge"], "vit_huge"),
                                        (["--scale", "--scale-sizes", "seed,x"], "--scale-sizes x"),
                                        (["--scale", "--scale-steps", "0"], "--scale-steps")])
def test_bad_flags_are_refused_before_anything_is_written(tmp_path, argv, flag):
    with pytest.raises(UserError, match=flag):
        main([*argv, "--out", str(tmp_path / "bench")])
    assert not (tmp_path / "bench").exists()
