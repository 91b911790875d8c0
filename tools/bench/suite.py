"""Every speed figure of the project, measured side by side in one run on this machine.

    python -m tools.bench                      # full run (CPU: ~10 min with ViT-S/14; a GPU is used when present)
    python -m tools.bench --quick              # small sizes, ~1 min: a smoke check, not figures to quote
    python -m tools.bench --skip p3 --out /tmp/bench

Figures: backbone ms/frame (fp32 / bf16 / CPU int8), stage-1 efficiency (extract() ÷ bare backbone), P1 training
samples/s from the cache ÷ the seed's way, P3 sampler stream read ÷ plain read, P4 live-loop decisions/s
ring buffer ÷ recompute, cache bytes per frame per reduction, key release time error (median / p99 / max ms).
Writes OUT/results.md and OUT/results.json;
inputs are made in a temporary folder under OUT and deleted afterwards.
"""
import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from data.errors import UserError, disk_faults
from extract_features.models import backbone_config
from tools.bench.backbone import BackboneBench, backbone_speed
from tools.bench.drive import DriveBench, decision_speedup
from tools.bench.keys import KeyReleaseBench, release_timing
from tools.bench.extract import CacheBytesBench, Stage1Bench, cache_bytes_per_frame, stage1_efficiency
from extract_features.device import pick_device
from tools.bench.machine import describe, load_average
from tools.bench.read import ReadBench, sampler_read_efficiency
from tools.bench.report import precision_line, write_results
from tools.bench.scale import ScaleBench, default_geometry, scale_figures, size_bytes
from tools.bench.train import TrainBench, training_speedup

FIGURES = {  # name → what it measures, in the order they run
    "backbone": "backbone ms/frame, fp32, bf16 and (CPU) int8",
    "stage1": "stage-1 efficiency: extract() ÷ bare backbone",
    "p1": "P1: training samples/s from the cache ÷ the seed's way",
    "p3": "P3: sampler stream read ÷ plain sequential read",
    "p4": "P4: live-loop decisions/s, ring buffer ÷ recompute",
    "cache_bytes": "cache bytes per frame: fp16, int8, PCA",
    "key_release": "key release time error of the key scheduler: median, p99, max",
    "scale": "scale: stream-mode training from caches of the users' size (only with --scale)",
}


@dataclass
class BenchSettings:
    out: Path
    device: torch.device
    backbones: tuple[str, ...]  # all are timed (figure 1) and sized (cache bytes); the first runs the rest
    backbone: BackboneBench
    stage1: Stage1Bench
    p1: TrainBench
    p3: ReadBench
    p4: DriveBench
    cache_bytes: CacheBytesBench
    key_release: KeyReleaseBench = field(default_factory=KeyReleaseBench)
    scale: ScaleBench = field(default_factory=ScaleBench)
    quick: bool = False
    skip: tuple[str, ...] = ()
    command: str = "python -m tools.bench"  # written into the results


def default_backbones(device: torch.device) -> tuple[str, ...]:
    """ViT-B/14 leads on a GPU, ViT-S/14 on a CPU (B/14 is timed and sized on both); DINOv3 S/16 and B/16
    are timed and sized beside them."""
    dinov2 = ("dinov2_vitb14", "dinov2_vits14") if device.type == "cuda" else ("dinov2_vits14", "dinov2_vitb14")
    return dinov2 + ("dinov3_vits16", "dinov3_vitb16")


def make_settings(out: Path, device: torch.device, backbones: tuple[str, ...], quick: bool = False,
                  p3_gb: float = 3.0, skip: tuple[str, ...] = (), command: str = "python -m tools.bench") -> BenchSettings:
    """Sizes for a full or quick run on a GPU or a CPU: each figure runs long enough to be stable there."""
    main, gpu = backbones[0], device.type == "cuda"
    if gpu and not quick:
        sizes = dict(backbone=BackboneBench(backbones, batch=64, iters=10),
                     stage1=Stage1Bench(main, episodes=4, frames=512, batch=64, block_rows=256, rounds=2),
                     p1=TrainBench(main, cache_steps=200, seed_steps=20, rounds=2, episodes=4, frames=500),
                     p3=ReadBench(main, gb=p3_gb, rounds=3),
                     p4=DriveBench(main, decisions=100, warmup=10, rounds=2),
                     cache_bytes=CacheBytesBench(backbones, frames=64))
    elif gpu:
        sizes = dict(backbone=BackboneBench(backbones[:1], batch=16, iters=3),
                     stage1=Stage1Bench(main, episodes=1, frames=128, batch=32, block_rows=64, rounds=1),
                     p1=TrainBench(main, cache_steps=20, seed_steps=3, rounds=1, episodes=1, frames=200),
                     p3=ReadBench(main, gb=p3_gb, rounds=1),
                     p4=DriveBench(main, decisions=20, warmup=3, rounds=1),
                     cache_bytes=CacheBytesBench(backbones[:1], frames=8))
    elif not quick:
        sizes = dict(backbone=BackboneBench(backbones, batch=4, iters=3),
                     stage1=Stage1Bench(main, episodes=2, frames=32, batch=16, block_rows=32, rounds=2),
                     p1=TrainBench(main, cache_steps=20, seed_steps=1, rounds=2, episodes=2, frames=200),
                     p3=ReadBench(main, gb=p3_gb, rounds=3),
                     p4=DriveBench(main, decisions=6, warmup=2, rounds=2),
                     cache_bytes=CacheBytesBench(backbones, frames=4))
    else:  # quick on a CPU: the smallest sizes that still run every code path
        sizes = dict(backbone=BackboneBench(backbones[:1], batch=2, iters=1),
                     stage1=Stage1Bench(main, episodes=1, frames=8, batch=4, block_rows=8, rounds=1),
                     p1=TrainBench(main, batch=4, cache_steps=5, seed_steps=1, rounds=1, episodes=1, frames=60),
                     p3=ReadBench(main, gb=p3_gb, episodes=2, block_rows=64, rounds=1),
                     p4=DriveBench(main, decisions=3, warmup=1, rounds=1),
                     cache_bytes=CacheBytesBench(backbones[:1], frames=2))
    key_release = KeyReleaseBench(decisions=40 if quick else 200)  # ~75 ms each, twice
    return BenchSettings(out=out, device=device, backbones=backbones, quick=quick, skip=skip, command=command,
                         key_release=key_release, **sizes)


def run_figure(name: str, s: BenchSettings, work: Path, log) -> dict:
    if name == "backbone":
        return backbone_speed(s.backbone, s.device, log)
    if name == "stage1":
        return stage1_efficiency(s.stage1, s.device, work, log)
    if name == "p1":
        return training_speedup(s.p1, s.device, work, log)
    if name == "p3":
        return sampler_read_efficiency(s.p3, s.device, work, log)
    if name == "p4":
        return decision_speedup(s.p4, s.device, log)
    if name == "key_release":
        return release_timing(s.key_release, log)
    if name == "scale":
        return scale_figures(s.scale, s.device, work, log)
    return cache_bytes_per_frame(s.cache_bytes, s.device, work, log)


def run_bench(s: BenchSettings, log=print) -> dict:
    """Run every figure not skipped, write OUT/results.{json,md}; returns the results."""
    if s.out.exists() and not s.out.is_dir():
        raise UserError(f"--out {s.out}: is a file; give a directory for the results")
    machine = describe(s.device, s.command)
    log(f"bench on {machine['device']} ({machine['cpu']}, {machine['torch_threads']} torch threads), "
        f"precision {precision_line(machine)}, "
        f"backbones {', '.join(s.backbones)}{', quick' if s.quick else ''}")
    created = not s.out.exists()
    s.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".bench-work-", dir=s.out))
    figures, todo, done = {}, [n for n in FIGURES if n not in s.skip], False
    try:
        for i, name in enumerate(todo, 1):
            log(f"[{i}/{len(todo)}] {FIGURES[name]}")
            start = time.perf_counter()
            figures[name] = run_figure(name, s, work, log)
            figures[name]["seconds"] = time.perf_counter() - start
            log(f"  ({figures[name]['seconds']:.0f} s)")
        done = True
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not done and created and not any(s.out.iterdir()):
            s.out.rmdir()
    machine["load_average_end"] = load_average()
    results = {"machine": machine, "quick": s.quick, "backbones": list(s.backbones), "skipped": list(s.skip),
               "figures": figures}
    json_path, md_path = write_results(s.out, results)
    log(f"wrote {md_path} and {json_path}")
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--quick", action="store_true", help="small sizes (~1 min): checks that every figure runs")
    p.add_argument("--device", default="auto", help="auto (a GPU when present), cpu or cuda (default: auto)")
    p.add_argument("--out", type=Path, default=Path("bench"), help="folder for results.md / results.json (default: bench)")
    p.add_argument("--p3-gb", type=float, help="size of the on-disk cache P3 streams (default: 3, quick: 0.25)")
    p.add_argument("--skip", default="", help=f"comma-separated figures to leave out: {', '.join(FIGURES)}")
    p.add_argument("--scale", action="store_true", help="also the scale figure: a synthetic cache of each "
                   "--scale-sizes, a plain read of it and one stream-mode training epoch with the real head")
    p.add_argument("--scale-sizes", help="comma-separated cache sizes for --scale: seed (the seed's dataset as the "
                   "gta5 defaults cache it), ram (1.25x this machine's memory) or GB (default: seed,ram; quick: 0.1)")
    p.add_argument("--scale-steps", type=int, help="cap on the training steps of each --scale epoch; the epoch's "
                   "time is then extrapolated (default: the whole epoch on a GPU, 200 on a CPU; quick: 3)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice, one per core)")
    p.add_argument("--backbones", help="comma-separated backbones; the first runs stage 1, P1, P3 and P4, all are "
                                       "timed and sized (default: dinov2_vits14,dinov2_vitb14 on CPU, B/14 first on GPU)")
    args = p.parse_args(argv)
    skip = tuple(n for n in args.skip.split(",") if n)
    unknown = [n for n in skip if n not in FIGURES]
    skip += () if args.scale or "scale" in skip else ("scale",)
    if unknown:
        raise UserError(f"--skip {args.skip}: unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    p3_gb = args.p3_gb if args.p3_gb is not None else (0.25 if args.quick else 3.0)
    if not p3_gb > 0:
        raise UserError(f"--p3-gb {args.p3_gb}: must be a positive number of GB")
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: must be at least 1")
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    backbones = tuple(args.backbones.split(",")) if args.backbones else default_backbones(device)
    for name in backbones:
        backbone_config(name)  # refuses an unknown name before anything runs
    command = " ".join(["python -m tools.bench", *(sys.argv[1:] if argv is None else argv)])
    settings = make_settings(args.out, device, backbones, args.quick, p3_gb, skip, command)
    if args.scale_steps is not None and args.scale_steps < 1:
        raise UserError(f"--scale-steps {args.scale_steps}: must be at least 1")
    sizes = tuple(args.scale_sizes.split(",")) if args.scale_sizes else ("0.1",) if args.quick else ScaleBench.sizes
    cap = 3 if args.quick else None if device.type == "cuda" else 200  # a CPU trains an hour's cache for hours
    settings.scale = ScaleBench(sizes=sizes, max_steps=args.scale_steps or cap,
                                **({"episodes": 2, "block_rows": 64} if args.quick else {}))
    geometry = default_geometry()
    for size in sizes:
        size_bytes(size, geometry)  # refuses a bad size before anything runs
    with disk_faults(args.out, kept="its temporary inputs are deleted; free space or pass another --out"):
        run_bench(settings)
