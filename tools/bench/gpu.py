"""The GPU figures in one run, sized for a few minutes on an H100/H200, with the GPU named in the results:

    timeout 480 python -m tools.bench.gpu --out bench/gpu      # --budget-s 400 by default

Backbone frames/s for ViT-S/14 and B/14 in bf16 (eager and torch.compile), stage 1 end to end with B/14
at 252x182 (goal ≥ 4000 frames/s), P1 with B/14 (goal ≥ 50×), P3 with the gathering on the GPU, the live
loop's capture-to-keys latency with B/14 (goal ≤ 20 ms p50) and stream-mode training from an 8 GB cache.
Figures run in that order; the results are written after each one, so a run cut short keeps what it
measured. A figure that fails is recorded with its error and the next one runs; once --budget-s is spent
the rest are recorded as skipped. Channels-last does not apply (a ViT has one convolution, the patch
embedding); CUDA graphs are not tried.
"""
import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from data.errors import UserError, run_cli
from extract_features.device import pick_device
from extract_features.extractor import FeatureExtractor
from extract_features.loader import load_backbone
from tools.bench.backbone import time_ms_per_frame
from extract_features.preprocess import PreprocessSettings
from tools.bench.backbone import BackboneBench, backbone_speed
from tools.bench.drive import DriveBench, decision_speedup
from tools.bench.extract import Stage1Bench, stage1_efficiency
from tools.bench.machine import describe, load_average
from tools.bench.read import ReadBench, sampler_read_efficiency
from tools.bench.report import write_results
from tools.bench.scale import ScaleBench, scale_figures
from tools.bench.train import TrainBench, training_speedup

GOALS = {"stage1_frames_per_s": 4000.0, "p1_speedup": 50.0, "latency_p50_ms": 20.0}


def suite(main: str, small: str, toy: bool = False) -> list[tuple[str, object]]:
    """(figure, its settings) in the order they run: B/14 (`main`) leads; toy: tiny sizes for a CPU test."""
    if toy:
        return [("backbone", BackboneBench((main, small), batch=2, iters=1)),
                ("backbone_compiled", BackboneBench((main,), batch=2, iters=1)),
                ("stage1", Stage1Bench(main, episodes=1, frames=8, batch=4, block_rows=8, rounds=1)),
                ("p1", TrainBench(main, batch=4, cache_steps=2, seed_steps=1, rounds=1, episodes=1, frames=60)),
                ("p3", ReadBench(main, gb=0.01, episodes=2, block_rows=64, rounds=1)),
                ("p4", DriveBench(main, decisions=3, warmup=1, rounds=1)),
                ("scale", ScaleBench(sizes=("0.1",), episodes=2, block_rows=64, max_steps=2))]
    return [("backbone", BackboneBench((main, small), batch=128, iters=10)),
            ("backbone_compiled", BackboneBench((main,), batch=128, iters=10)),
            ("stage1", Stage1Bench(main, episodes=4, frames=1024, batch=128, block_rows=256, rounds=2)),
            ("p1", TrainBench(main, batch=64, cache_steps=200, seed_steps=20, rounds=2, episodes=4, frames=500)),
            ("p3", ReadBench(main, gb=4.0, rounds=3)),
            ("p4", DriveBench(main, decisions=200, warmup=20, rounds=2)),
            ("scale", ScaleBench(sizes=("8",), max_steps=400))]


def compiled_speed(s: BackboneBench, device: torch.device, log=print) -> dict:
    """Backbone ms/frame in bf16 under torch.compile (compilation is in the untimed warm-up)."""
    frames = np.random.default_rng(0).integers(0, 256, size=(s.batch, s.height, s.width, 3), dtype=np.uint8)
    results = {}
    for name in s.backbones:
        extractor = FeatureExtractor(load_backbone(name, "random", device=device, progress=False),
                                     PreprocessSettings(), bf16=True, compile=True)
        start = time.perf_counter()
        ms, _ = time_ms_per_frame(extractor, frames, s.iters)
        results[name] = {"bf16_compiled_ms_per_frame": ms, "frames_per_s": 1000 / ms,
                         "seconds_with_compile": time.perf_counter() - start}
        log(f"  {name}: bf16 + torch.compile {1000 / ms:.0f} frames/s")
    return {"input": [s.height, s.width], "batch": s.batch, "iters": s.iters, "backbones": results}


def run_one(name: str, settings, device: torch.device, work: Path, log) -> dict:
    if name == "backbone":
        return backbone_speed(settings, device, log)
    if name == "backbone_compiled":
        return compiled_speed(settings, device, log)
    if name == "stage1":
        return stage1_efficiency(settings, device, work, log)
    if name == "p1":
        return training_speedup(settings, device, work, log)
    if name == "p3":
        return sampler_read_efficiency(settings, device, work, log)
    if name == "p4":
        return decision_speedup(settings, device, log)
    return scale_figures(settings, device, work, log)


def gpu_lines(figures: dict) -> list[str]:
    """The GPU summary: frames/s, stage 1 and P1 against their goals, capture-to-keys latency."""
    lines = ["", "## GPU figures", "", "| figure | measured | goal |", "|---|---|---|"]
    for name, v in figures.get("backbone", {}).get("backbones", {}).items():
        lines.append(f"| {name} bf16 backbone, batch {figures['backbone']['batch']} | "
                     f"{1000 / v['bf16_ms_per_frame']:.0f} frames/s (fp32 {1000 / v['fp32_ms_per_frame']:.0f}) | |")
    for name, v in figures.get("backbone_compiled", {}).get("backbones", {}).items():
        lines.append(f"| {name} bf16 backbone + torch.compile | {v['frames_per_s']:.0f} frames/s | |")
    if "stage1" in figures:
        f = figures["stage1"]
        lines.append(f"| stage 1 end to end, {f['backbone']} at 252x182, batch {f['batch']}, {f['precision']} | "
                     f"{f['pipeline_frames_per_s']:.0f} frames/s | ≥ {GOALS['stage1_frames_per_s']:.0f} |")
    if "p1" in figures:
        lines.append(f"| P1 with {figures['p1']['backbone']} | {figures['p1']['speedup']:.0f}× | ≥ {GOALS['p1_speedup']:.0f}× |")
    if "p4" in figures:
        f = figures["p4"]
        lines.append(f"| live loop capture to keys, {f['backbone']} {f['precision']} (ring buffer) | "
                     f"p50 {f['ring_p50_ms']:.1f} ms, p95 {f['ring_p95_ms']:.1f} ms | p50 ≤ {GOALS['latency_p50_ms']:.0f} ms |")
    return lines


def run_suite(out: Path, device: torch.device, budget_s: float, toy: bool = False, command: str = "",
              main: str = "dinov2_vitb14", small: str = "dinov2_vits14", log=print) -> dict:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; give a directory for the results")
    machine = describe(device, command)
    log(f"GPU suite on {machine['device']} ({machine['cpu']}), budget {budget_s:.0f} s")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".bench-gpu-", dir=out))
    figures, problems, start = {}, [], time.perf_counter()
    try:
        for name, settings in suite(main, small, toy):
            if time.perf_counter() - start > budget_s:
                problems.append(f"{name} (not run: the {budget_s:.0f} s budget was spent)")
            else:
                log(f"[{name}]")
                begun = time.perf_counter()
                try:
                    figures[name] = run_one(name, settings, device, work, log)
                    figures[name]["seconds"] = time.perf_counter() - begun
                except Exception as e:  # noqa: BLE001 — one failing figure must not cost the others their GPU time
                    problems.append(f"{name} (failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
                    log(f"  failed: {type(e).__name__}: {e}")
            write(out, machine, figures, problems, toy)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"figures": figures, "problems": problems}


def write(out: Path, machine: dict, figures: dict, problems: list[str], toy: bool) -> None:
    results = {"machine": {**machine, "load_average_end": load_average()}, "quick": toy, "backbones": [],
               "skipped": problems, "figures": figures, "suite": "gpu"}
    write_results(out, results, gpu_lines(figures))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.bench.gpu", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--out", type=Path, default=Path("bench/gpu"), help="folder for results.md / results.json "
                                                                      "(default: bench/gpu)")
    p.add_argument("--budget-s", type=float, default=400.0,
                   help="start no figure after this many seconds (default: %(default)s; leaves room under timeout 480)")
    p.add_argument("--device", default="cuda", help="cuda or cuda:N (default: cuda)")
    p.add_argument("--toy", action="store_true", help="tiny sizes and a 2-block test backbone: checks the suite "
                                                      "runs (also on a CPU); not figures to quote")
    args = p.parse_args(argv)
    if not args.budget_s > 0:
        raise UserError(f"--budget-s {args.budget_s}: must be a positive number of seconds")
    if not args.toy and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        raise UserError(f"--device {args.device}: the GPU suite needs a CUDA device and a CUDA build of torch "
                        f"(this one: {torch.__version__}); --toy tries it at tiny size on a CPU")
    device = pick_device(args.device)
    names = {"main": "vit_tiny_test", "small": "vit_tiny_test_reg"} if args.toy else {}
    command = " ".join(["python -m tools.bench.gpu", *(sys.argv[1:] if argv is None else argv)])
    run_suite(args.out, device, args.budget_s, args.toy, command, **names)


if __name__ == "__main__":
    run_cli(main)
