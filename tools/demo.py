"""python -m tools.demo: the command line of drive.carracing.demo (its docstring is this command's --help)."""
import argparse
from pathlib import Path

from data.errors import UserError, disk_faults, run_cli
from drive.carracing.demo import __doc__ as RECIPE, DEMO_VARIANTS, DemoSettings, run


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.demo", description=RECIPE.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=RECIPE.split("\n", 1)[1])
    d = DemoSettings()
    p.add_argument("--out", type=Path, default=d.out, help="folder for every stage's files (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=d.minutes, help="expert game time to record (default: %(default)s)")
    p.add_argument("--dagger-rounds", type=int, default=d.dagger_rounds,
                   help="rounds of the agent driving while the expert labels (default: %(default)s)")
    p.add_argument("--dagger-minutes", type=float, default=d.dagger_minutes,
                   help="game time the agent drives per DAgger round (default: %(default)s; 3 scored higher in one "
                        "run but takes the demo past 15 minutes on a 2-core CPU)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"training steps of the final head (default: %(default)s; "
                                                             f"the heads that pilot a DAgger round: {d.pilot_steps})")
    p.add_argument("--tracks", type=int, default=d.tracks, help="held-out tracks to drive (default: %(default)s)")
    p.add_argument("--backbone", default=d.backbone,
                   help="backbone; its DINOv2 weights if in the torch hub cache, else random (default: %(default)s)")
    p.add_argument("--threads", type=int, help="torch CPU threads of each worker (default: 1 on a CPU of at most 2 "
                                               "cores without fast bf16, where 2 threads collide with the demo's own; "
                                               "else torch's choice); training, one process, uses threads x workers")
    p.add_argument("--workers", type=int, help="backbones at once: stage-1 threads, and processes driving the DAgger "
                                               "and held-out tracks (default: on a CPU, cores / threads; on a GPU 1)")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="initialisation seed of every head (default: %(default)s); the closed-loop reward moves a lot "
                        "with it, so compare changes over several")
    p.add_argument("--game", choices=tuple(DEMO_VARIANTS), default=d.game,
                   help="the embedded game's view (default: %(default)s; carracing_hood: hood camera, minimap, traffic)")
    p.add_argument("--traffic", type=int, help="traffic cars per track on the hood view (default: the profile's)")
    args = p.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out}: is a file; give a directory for the demo")
    settings = DemoSettings(out=args.out, minutes=args.minutes, steps=args.steps, tracks=args.tracks,
                            backbone=args.backbone, dagger_rounds=args.dagger_rounds,
                            dagger_minutes=args.dagger_minutes, threads=args.threads, workers=args.workers,
                            seed=args.seed,
                            game=args.game, traffic=args.traffic)
    with disk_faults(args.out, kept="each step's finished output is kept: rerun to continue"):
        run(settings)


if __name__ == "__main__":
    run_cli(main)
