"""The whole pipeline on the embedded CarRacing game, from nothing: `make demo`.

    python -m tools.demo [--out runs/demo] [--minutes 8] [--dagger-rounds 3] [--dagger-minutes 2] [--steps 1000] [--tracks 10]

1. the scripted expert drives tracks (seeds 0, 1, ...) and is recorded like a player would be, now
   and then pushed off its line so that the demos show how to get back (the keys stay the expert's);
2. stage 1 extracts ViT-S/14 tokens (real DINOv2 weights when the torch hub cache holds them, else a
   RANDOMLY initialised ViT-S/14, said so everywhere);
3. stage 2 trains the seed's CNN+LSTM head (3 frames 0.2 s apart, labels shifted by the latency);
4. DAgger: that agent drives other tracks (seeds 500+) while the expert's keys are recorded; stage 1
   and 2 again on everything (--dagger-rounds times);
5. the agent drives held-out tracks (seeds 1000+) with a fixed latency, next to the expert;
6. writes OUT/results.md (the table), OUT/drive.mp4 (first held-out track), OUT/train/curves.png.
Each step is skipped when its output is already there, so an interrupted demo continues.
"""
import argparse
from pathlib import Path

from data.errors import UserError, disk_faults, run_cli
from drive.carracing.demo import DemoSettings, run


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    d = DemoSettings()
    p.add_argument("--out", type=Path, default=d.out)
    p.add_argument("--minutes", type=float, default=d.minutes, help="expert game time to record (default: %(default)s)")
    p.add_argument("--dagger-rounds", type=int, default=d.dagger_rounds,
                   help="rounds of the agent driving while the expert labels (default: %(default)s)")
    p.add_argument("--dagger-minutes", type=float, default=d.dagger_minutes,
                   help="game time the agent drives per DAgger round (default: %(default)s; 3 scored higher in one "
                        "run but takes the demo past 15 minutes on a 2-core CPU)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"training steps of the final head (default: %(default)s; "
                                                             f"the heads that pilot a DAgger round: {d.pilot_steps})")
    p.add_argument("--tracks", type=int, default=d.tracks, help="held-out tracks to drive (default: %(default)s)")
    p.add_argument("--backbone", default=d.backbone)
    args = p.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out}: is a file; give a directory for the demo")
    with disk_faults(args.out, kept="each step's finished output is kept: rerun to continue"):
        run(DemoSettings(out=args.out, minutes=args.minutes, steps=args.steps, tracks=args.tracks, backbone=args.backbone,
                         dagger_rounds=args.dagger_rounds, dagger_minutes=args.dagger_minutes))


if __name__ == "__main__":
    run_cli(main)
