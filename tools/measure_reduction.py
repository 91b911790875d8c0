"""What a reduced feature cache costs the head: val BCE of heads trained on reduced caches against an fp16
full-channel cache of the same recordings. The measurement behind the gta5 profile's cache defaults.

    python -m tools.measure_reduction --out runs/reduction [--minutes 5] [--steps 250] [--seeds 0 1 2]

Records the embedded game's scripted expert (as `make demo` does), extracts one cache per reduction with
the same backbone (a RANDOMLY INITIALISED ViT-S/14 unless DINOv2 weights are in the torch hub cache), trains
the demo's head on each with the same training seeds and compares the best val BCE. Caches at the
recording's frame rate share their val sequences exactly; a cache at a lower frame rate is scored on its own
(every n-th) val sequences. Writes OUT/results.md; steps already done are skipped.
"""
import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cache.reduce import Reduction
from data.atomic import write_json, write_text
from data.errors import run_cli
from data.flags import Seeds
from data.split import SplitSettings
from extract_features.estimate import bytes_per_frame
from extract_features.pipeline import ExtractSettings, extract
from drive.carracing.demo import DemoSettings, backbone_label, demo_weights, record, train_settings
from train_head.train import train

# (name, reduction); the first is the reference
REDUCTIONS = (
    ("fp16, all channels", Reduction(dtype="fp16")),
    ("int8, PCA 64", Reduction(dtype="int8", pca_dim=64)),
    ("int8, PCA 64, half the frame rate", Reduction(dtype="int8", pca_dim=64, fps=5.0)),
)


@dataclass(frozen=True)
class MeasureSettings:
    out: Path = Path("runs/reduction")
    minutes: float = 5.0  # expert game time recorded (10 fps)
    backbone: str = "dinov2_vits14"
    variants: tuple[str, ...] = ("clean",)  # variants only multiply the size; the reduction is what is measured
    steps: int = 250
    eval_every: int = 25  # best.pt keeps the best of these evaluations: early stopping, as the user gets
    seeds: tuple[int, ...] = (0, 1, 2)
    val_fraction: float = 0.2


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def run(s: MeasureSettings) -> str:
    demo = DemoSettings(out=s.out, minutes=s.minutes, backbone=s.backbone, variants=s.variants, steps=s.steps)
    record(demo, print)
    weights = demo_weights(s.backbone)
    rows = []
    for name, reduction in REDUCTIONS:
        cache = s.out / f"cache-{slug(name)}"
        extract(ExtractSettings(recordings=[s.out / "recordings"], cache=cache, backbone=s.backbone, weights=weights,
                                reduction=reduction, variants=s.variants, block_rows=128, batch_size=32,
                                bf16=None), log=print)  # None: bf16 where it is fast
        losses = []
        for seed in s.seeds:
            run_dir = s.out / f"train-{slug(name)}-seed{seed}"
            result = run_dir / "best.json"
            if not result.exists():
                t = train_settings(demo, cache, run_dir, s.steps)
                t = replace(t, seed=seed, sampler=replace(t.sampler, seed=seed), eval_every=s.eval_every,
                            split=SplitSettings(val_fraction=s.val_fraction), quiet=True)
                write_json(result, train(t), default=float)
            losses.append(json.loads(result.read_text())["val_bce"])
        rows.append((name, reduction, losses))
        print(f"{name}: val BCE {', '.join(f'{v:.4f}' for v in losses)}", flush=True)
    report = format_report(s, weights, rows)
    write_text(s.out / "results.md", report)
    print(report)
    return report


def format_report(s: MeasureSettings, weights: str, rows) -> str:
    reference = float(np.mean(rows[0][2]))
    lines = ["| cache | ViT-B/14 reg bytes/frame | val BCE per training seed | mean | vs fp16 all channels |",
             "|---|---:|---|---:|---:|"]
    for name, reduction, losses in rows:
        mean = float(np.mean(losses))
        size = bytes_per_frame(768, 4, 18 * 13, reduction)
        lines.append(f"| {name} | {size:,} | {', '.join(f'{v:.4f}' for v in losses)} | {mean:.4f} | "
                     f"{(mean / reference - 1) * 100:+.1f} % |")
    return (f"# Cache reductions: val BCE of the head against an fp16 all-channel cache\n\n"
            f"backbone: {backbone_label(s.backbone, weights)}; {s.minutes:g} min of expert demos of the embedded "
            f"game (10 fps), variants {', '.join(s.variants)}, val fraction {s.val_fraction}; the demo's head "
            f"(lstm/patches, seq 3, stride 0.2 s, label shift 0.1 s), {s.steps} steps, training seeds "
            f"{', '.join(map(str, s.seeds))}; the best val BCE of each run, evaluated every {s.eval_every} "
            f"steps. Bytes/frame are those of the gta5 default ViT-B/14 with registers at 240x180 (18x13 "
            f"patches).\n\n" + "\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tools.measure_reduction", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    d = MeasureSettings()
    p.add_argument("--out", type=Path, default=d.out, help="working folder (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=d.minutes, help="expert game time to record (default: %(default)s)")
    p.add_argument("--backbone", default=d.backbone, help="backbone (default: %(default)s)")
    p.add_argument("--steps", type=int, default=d.steps, help="training steps per head (default: %(default)s)")
    p.add_argument("--seeds", nargs="+", action=Seeds, default=list(d.seeds),
                   help="training seeds: 0 1 2, A-B or both (default: %(default)s)")
    args = p.parse_args()
    run(MeasureSettings(out=args.out, minutes=args.minutes, backbone=args.backbone, steps=args.steps,
                        seeds=tuple(args.seeds)))


if __name__ == "__main__":
    run_cli(main)
