"""python -m tools.compare_corrections: the command line of drive.carracing.compare_corrections (its docstring is this command's --help)."""
import argparse
from dataclasses import replace
from pathlib import Path

from data.errors import run_cli
from data.flags import Seeds
from drive.carracing.compare_corrections import __doc__ as RECIPE, CompareSettings, run
from drive.carracing.corrections import GateSettings
from drive.carracing.demo import DemoSettings


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tools.compare_corrections", description=RECIPE.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=RECIPE.split("\n", 1)[1])
    c, d = CompareSettings(), DemoSettings()
    p.add_argument("--out", type=Path, default=c.demo.out, help="run folder (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=d.minutes, help="shared expert demos, game minutes (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=c.rounds, help="rounds of extra data per arm (default: %(default)s)")
    p.add_argument("--round-minutes", type=float, default=c.round_minutes,
                   help="expert-labelled game minutes each round adds, in every arm (default: %(default)s)")
    p.add_argument("--seeds", nargs="+", action=Seeds, default=list(c.seeds),
                   help="training seeds of the final heads: 0 1 2, A-B or both (default: %(default)s)")
    p.add_argument("--steps", type=int, default=d.steps, help="training steps of the final heads (default: %(default)s)")
    p.add_argument("--pilot-steps", type=int, default=d.pilot_steps, help="... of the heads that drive a round (default: %(default)s)")
    p.add_argument("--tracks", type=int, default=d.tracks, help="held-out tracks, seeds 1000, ... (default: %(default)s)")
    p.add_argument("--eval-steps", type=int, default=c.eval_steps, help="physics steps per held-out track (default: %(default)s)")
    p.add_argument("--correction-weight", type=float, default=c.correction_weight,
                   help="loss weight of correction samples in the takeover arm (default: %(default)s)")
    p.add_argument("--max-offset", type=float, default=c.gate.max_offset,
                   help="the expert takes over beyond this distance from the centre line (default: %(default)s)")
    p.add_argument("--back-offset", type=float, default=c.gate.back_offset,
                   help="... and hands back within this distance (default: %(default)s)")
    args = p.parse_args()
    demo = replace(d, out=args.out, minutes=args.minutes, steps=args.steps, pilot_steps=args.pilot_steps,
                   tracks=args.tracks, dagger_rounds=0)
    run(CompareSettings(demo=demo, rounds=args.rounds, round_minutes=args.round_minutes, seeds=tuple(args.seeds),
                        correction_weight=args.correction_weight, eval_steps=args.eval_steps,
                        gate=GateSettings(max_offset=args.max_offset, back_offset=args.back_offset)))


if __name__ == "__main__":
    run_cli(main)
