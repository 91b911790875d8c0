"""python -m tools.ablate_drive: the command line of drive.carracing.ablate (its docstring is this command's --help)."""
import argparse
from dataclasses import replace
from pathlib import Path

from data.errors import require, run_cli
from data.flags import Seeds
from drive.carracing.ablate import __doc__ as RECIPE, run_ablation
from drive.carracing.demo import DemoSettings


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.ablate_drive", description=RECIPE.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=RECIPE.split("\n", 1)[1])
    d = DemoSettings()
    p.add_argument("--demo", type=Path, default=d.out, help="demo directory with recordings and cache")
    p.add_argument("--out", type=Path, default=Path("runs/ablate-drive"),
                   help="folder for every row, ablation.md, ablation.png, results.json (default: %(default)s)")
    p.add_argument("--seeds", nargs="+", action=Seeds, default=[0], help="training seeds per setting: 0 1 2, A-B or both")
    p.add_argument("--tracks", type=int, default=d.tracks, help="held-out tracks (seeds 1000, ...)")
    p.add_argument("--steps", type=int, default=d.steps, help="training steps per head (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=d.minutes, help="expert demos to record when missing")
    p.add_argument("--game", choices=("carracing", "carracing_hood"), default=d.game,
                   help="the embedded game's view (default: %(default)s; carracing_hood: hood camera, minimap, traffic)")
    p.add_argument("--traffic", type=int, help="traffic cars per track (default: the profile's)")
    p.add_argument("--skip", nargs="+", default=[], metavar="ROW",
                   help="rows to leave out, by name as in the table (e.g. gru \"patches + cls\"); the default row and "
                        "the expert are always run")
    args = p.parse_args(argv)
    require(bool(args.seeds), "--seeds", args.seeds, "at least one training seed")
    s = replace(DemoSettings(), out=args.demo, tracks=args.tracks, steps=args.steps, minutes=args.minutes,
                game=args.game, traffic=args.traffic)
    print(run_ablation(s, args.out, args.seeds, skip=tuple(args.skip)))


if __name__ == "__main__":
    run_cli(main)
