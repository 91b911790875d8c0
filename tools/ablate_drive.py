"""Test the seed's claims on the embedded game: train the ablation grid on the demo's cache and score
every head closed-loop on the same held-out tracks.

    python -m tools.ablate_drive [--demo runs/demo] [--out runs/ablate-drive] [--seeds 0 1] [--tracks 10]
    python -m tools.ablate_drive --game carracing_hood --demo runs/demo-hood --out runs/ablate-drive-hood --seeds 0 1 2

Rows: the default head and one change at a time (seq 1/2, GRU, no RNN, the seed successor's transformer
over all tokens of all frames, CLS only, patches + CLS, no label shift), the default head with thresholded instead of proportional steering or gas, and a control
whose "backbone" is the identity on raw 14x14 pixel patches. Writes OUT/ablation.md, OUT/ablation.png
and OUT/results.json. The demo's recordings (expert demos and DAgger rounds) and cache are made first
when missing; every row trains on them. Each finished row is kept in OUT/rows/ (its training runs and
closed-loop scores), so a run that was interrupted continues with the rows still missing.
"""
import argparse
from dataclasses import replace
from pathlib import Path

from data.errors import require, run_cli
from drive.carracing.ablate import run_ablation
from drive.carracing.demo import DemoSettings


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
    p.add_argument("--game", choices=("carracing", "carracing_hood"), default=d.game,
                   help="the embedded game's view (default: %(default)s; carracing_hood: hood camera, minimap, traffic)")
    p.add_argument("--traffic", type=int, help="traffic cars per track (default: the profile's)")
    args = p.parse_args(argv)
    require(bool(args.seeds), "--seeds", args.seeds, "at least one training seed")
    s = replace(DemoSettings(), out=args.demo, tracks=args.tracks, steps=args.steps, minutes=args.minutes,
                game=args.game, traffic=args.traffic)
    print(run_ablation(s, args.out, args.seeds))


if __name__ == "__main__":
    run_cli(main)
