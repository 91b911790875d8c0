"""The GPU suite: refused without a GPU unless --toy; one failing figure does not cost the others; results
are written after every figure; a spent budget skips the rest and says so."""
import json

import pytest

from data.errors import UserError
from tools.bench import gpu as bench_gpu
from tools.bench.backbone import BackboneBench
from tools.bench.drive import DriveBench


def test_refused_on_a_machine_without_cuda_unless_toy(tmp_path):
    with pytest.raises(UserError, match="--device cpu: the GPU suite needs a CUDA device.*--toy"):
        bench_gpu.main(["--device", "cpu", "--out", str(tmp_path / "gpu")])
    with pytest.raises(UserError, match="--budget-s 0"):
        bench_gpu.main(["--toy", "--device", "cpu", "--budget-s", "0", "--out", str(tmp_path / "gpu")])
    assert not (tmp_path / "gpu").exists()


def test_a_failing_figure_is_recorded_and_the_next_runs(tmp_path, monkeypatch):
    written = []
    real_write = bench_gpu.write
    monkeypatch.setattr(bench_gpu, "write", lambda out, *a: (written.append(json.loads(
        (out / "results.json").read_text())["figures"] if (out / "results.json").exists() else {}), real_write(out, *a)))
    monkeypatch.setattr(bench_gpu, "suite", lambda main, small, toy: [
        ("p4", DriveBench(main, decisions=2, warmup=1, rounds=1)),
        ("stage1", None),  # settings that break: stage 1 fails
        ("backbone", BackboneBench((main,), batch=1, iters=1))])
    out = tmp_path / "gpu"
    bench_gpu.main(["--toy", "--device", "cpu", "--out", str(out)])
    results = json.loads((out / "results.json").read_text())
    assert list(results["figures"]) == ["p4", "backbone"]
    assert len(results["skipped"]) == 1 and results["skipped"][0].startswith("stage1 (failed: AttributeError")
    assert [list(w) for w in written] == [[], ["p4"], ["p4"]]  # the file before each write: one per figure
    md = (out / "results.md").read_text()
    assert "## GPU figures" in md and "live loop capture to keys, vit_tiny_test" in md and "p95" in md
    assert "vit_tiny_test bf16 backbone, batch 1" in md and "Skipped: stage1 (failed" in md
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md"]  # work folder removed


def test_a_spent_budget_skips_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_gpu, "suite", lambda main, small, toy: [("p4", DriveBench(main)), ("backbone", None)])
    result = bench_gpu.run_suite(tmp_path / "gpu", bench_gpu.pick_device("cpu"), budget_s=1e-9, toy=True,
                                 main="vit_tiny_test", small="vit_tiny_test", log=lambda *a: None)
    assert result["figures"] == {}
    assert result["problems"] == [f"{n} (not run: the 0 s budget was spent)" for n in ("p4", "backbone")]
    assert "Skipped: p4 (not run" in (tmp_path / "gpu" / "results.md").read_text()
