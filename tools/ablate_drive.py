"""Test the seed's claims on the embedded game: train the ablation grid on the demo's cache and score
every head closed-loop on the same held-out tracks.

    python -m tools.ablate_drive [--demo runs/demo] [--out runs/ablate-drive] [--seeds 0 1] [--tracks 10]

Rows: the default head and one change at a time (seq 1/2, GRU, no RNN, CLS only, patches + CLS, no
label shift), the default head with thresholded instead of proportional steering or gas, and a control
whose "backbone" is the identity on raw 14x14 pixel patches. Writes OUT/ablation.md, OUT/ablation.png
and OUT/results.json. The demo's recordings (expert demos and DAgger rounds) and cache are made first
when missing; every row trains on them.
"""
import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from data.errors import require, run_cli
from drive.evaluate import evaluate_agent, evaluate_expert
from extract_features.backbone import RAW_PATCHES
from tools.demo import DemoSettings, backbone_label, features, held_out, learn, train_settings
from train_head.ablate import Variation, default_grid, markdown_table, plot, run_grid

CLOSED_LOOP = [("reward ↑", "reward"), ("tiles % ↑", "tiles"), ("off-track ↓", "off_track")]


def closed_loop(ckpts: list[Path], seeds: list[int], latency: float, controller: dict | None = None) -> dict:
    """Mean and spread over every (training seed, track) of reward, tiles and off-track events."""
    runs = [r for ckpt in ckpts for r in evaluate_agent(ckpt, seeds, latency=latency, controller=controller,
                                                        log=lambda *a: None)]
    return _spread(runs)


def _spread(runs) -> dict:
    out = {}
    for key, values in (("reward", [r.reward for r in runs]), ("tiles", [100 * r.tile_share for r in runs]),
                        ("off_track", [r.off_track_events for r in runs])):
        out[key], out[key + "_std"] = float(np.mean(values)), float(np.std(values))
    out["tracks"] = [r.reward for r in runs]
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.ablate_drive", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    d = DemoSettings()
    p.add_argument("--demo", type=Path, default=d.out, help="demo directory with recordings and cache")
    p.add_argument("--out", type=Path, default=Path("runs/ablate-drive"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds per setting")
    p.add_argument("--tracks", type=int, default=d.tracks, help="held-out tracks (seeds 1000, ...)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--minutes", type=float, default=d.minutes, help="expert demos to record when missing")
    args = p.parse_args(argv)
    require(bool(args.seeds), "--seeds", args.seeds, "at least one training seed")
    s = replace(DemoSettings(), out=args.demo, tracks=args.tracks, steps=args.steps, minutes=args.minutes)
    start = time.perf_counter()
    log = lambda what: print(f"[{time.perf_counter() - start:6.0f} s] {what}", flush=True)  # noqa: E731
    cache, weights, _ = learn(s, log)  # the demo's recordings (expert + DAgger) and cache
    control_cache, _ = features(s, log, backbone=RAW_PATCHES, cache=s.out / "cache-raw-patches")
    tracks = held_out(s)

    base = replace(train_settings(s, cache, args.out), quiet=True)
    rows = run_grid(base, default_grid(s.latency), args.seeds, args.out, log=log)
    for row in rows:
        log(f"driving: {row['name']}")
        row.update(closed_loop([Path(r["dir"]) / "best.pt" for r in row["runs"]], tracks, s.latency))
    default = rows[0]
    default_ckpts = [Path(r["dir"]) / "best.pt" for r in default["runs"]]
    for i, (name, controller) in enumerate([("thresholded steering", {"proportional": False}),
                                            ("thresholded gas", {"proportional_gas": False})], start=1):
        log(f"driving: default head, {name}")
        rows.insert(i, {"name": name, "variation": {}, "runs": default["runs"],
                        **{k: v for k, v in default.items() if k.startswith("val_")},
                        **closed_loop(default_ckpts, tracks, s.latency, controller=controller)})
    control = run_grid(replace(base, cache=control_cache), [Variation("control: raw pixel patches, no backbone")],
                       args.seeds, args.out, log=log)[0]
    log("driving: control")
    control.update(closed_loop([Path(r["dir"]) / "best.pt" for r in control["runs"]], tracks, s.latency))
    rows.append(control)
    expert = {"name": "expert (same latency)", "variation": {}, "runs": [],
              **_spread(evaluate_expert(tracks, latency=s.latency))}
    rows.append(expert)

    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows, extra=CLOSED_LOOP)
    note = (f"backbone: {backbone_label(s.backbone, weights)} (PCA {s.pca_dim}); {s.minutes:g} min of expert demos "
            f"+ {s.dagger_rounds} DAgger round(s) of {s.dagger_minutes:g} min; "
            f"{s.steps} steps; training seeds {args.seeds}; closed loop on tracks {tracks[0]}-{tracks[-1]} at a fixed "
            f"latency of {s.latency} s; ± is the std over every (training seed, track) pair. "
            f"wall time {time.perf_counter() - start:.0f} s")
    (args.out / "ablation.md").write_text(f"{table}\n\n{note}\n")
    (args.out / "results.json").write_text(json.dumps(rows, indent=1, default=str))
    plot(rows, args.out / "ablation.png", keys=(("val BCE", "val_bce"), ("closed-loop reward", "reward"),
                                                 ("tiles %", "tiles")))
    print(table + "\n\n" + note)


if __name__ == "__main__":
    run_cli(main)
