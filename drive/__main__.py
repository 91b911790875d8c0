"""Drive with a trained head: the embedded CarRacing game (default), or GTA V through the screen.

    python -m drive --ckpt runs/train/best.pt                          # one CarRacing track, wall time
    python -m drive --ckpt runs/train/best.pt --latency 0.1 --video drive.mp4
    python -m drive --ckpt runs/train/best.pt --eval --seeds 1000-1009 --latency 0.1 --table eval.md
    python -m drive --game carracing_hood --ckpt runs/hood/best.pt --eval --latency 0.1 --traffic 5
    python -m drive --ckpt runs/gta/best.pt --game gta5 [--region 0,0,800,600] [--telemetry drive.jsonl]
    python -m drive --ckpt runs/gta/best.pt --game gta5 --record-corrections recordings/corrections
"""
import argparse
from pathlib import Path

from data.errors import UserError, require, run_cli
from data.flags import Renamed
from data.paths import check_writable
from drive.agent import MODES, load_agent
from drive.controller import ControllerSettings
from drive.game import GAMES, game_modules, load_game
from drive.loop import LoopSettings


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m drive", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--ckpt", type=Path, required=True, help="checkpoint from python -m train_head (best.pt)")
    p.add_argument("--game", choices=list(GAMES), default="carracing",
                   help="default: %(default)s (the embedded game, top-down; carracing_hood: hood camera, minimap, traffic)")
    p.add_argument("--weights", help="backbone weights (default: what --weights said at feature extraction)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")
    c = p.add_argument_group("controller (defaults from the checkpoint)")
    c.add_argument("--max-steer", type=float, help="a/d held for at most this fraction of the decision interval")
    c.add_argument("--steer-gain", type=float, help="proportional steering: a/d held for gain · |p(a) - p(d)| of the interval")
    c.add_argument("--gas-threshold", type=float, help="w held while p(w) >= this")
    c.add_argument("--brake-threshold", type=float, help="s held while p(s) >= this")
    c.add_argument("--thresholded", action="store_true", help="steer by threshold instead of proportionally")
    gas = c.add_mutually_exclusive_group()
    gas.add_argument("--proportional-gas", dest="proportional_gas", action="store_const", const=True,
                     help="hold w for p(w) of each interval (partial throttle)")
    gas.add_argument("--threshold-gas", dest="proportional_gas", action="store_const", const=False,
                     help="hold w for the whole interval while p(w) >= --gas-threshold")
    loop = p.add_argument_group("loop")
    loop.add_argument("--features", "--mode", dest="mode", action=Renamed, choices=MODES, default=LoopSettings.mode,
                      help="ring: backbone on the newest frame only; recompute: on every sequence frame (the seed's "
                           "way); --mode is its deprecated old name (default: %(default)s)")
    loop.add_argument("--telemetry", type=Path, help="JSONL file, one line per decision (must not exist)")
    loop.add_argument("--max-decisions", type=int, default=LoopSettings.max_decisions,
                      help="stop after this many decisions (0: no limit)")
    loop.add_argument("--watchdog", type=float, default=LoopSettings.watchdog_s, help="release every key after this many seconds "
                      "without a decision (default: %(default)s)")
    for game in game_modules():
        game.add_arguments(p)
    return p


def check_args(args) -> None:
    """Every refusal that needs no file read, before anything is loaded or written."""
    game = load_game(args.game)
    for other in game_modules():
        misplaced = [name for name in other.FLAGS if name not in game.FLAGS
                     and getattr(args, name) is not None and getattr(args, name) is not False]
        if misplaced:
            raise UserError(f"--{misplaced[0].replace('_', '-')} works with --game {other.NAMES[0]} only")
    game.check(args)
    if args.telemetry and args.telemetry.exists():
        raise UserError(f"{args.telemetry}: already exists; choose a new --telemetry file")
    if args.telemetry:
        check_writable(args.telemetry, "--telemetry")
    if args.max_decisions < 0:
        raise UserError(f"--max-decisions {args.max_decisions}: must be >= 0")
    require(0 < args.watchdog <= 60, "--watchdog", args.watchdog, "> 0 seconds (and at most 60)")
    controller_settings(args, ControllerSettings())  # refuses a bad value when made


def controller_settings(args, defaults: ControllerSettings) -> ControllerSettings:
    overrides = {"max_steer": args.max_steer, "steer_gain": args.steer_gain, "gas_threshold": args.gas_threshold,
                 "brake_threshold": args.brake_threshold, "proportional": False if args.thresholded else None,
                 "proportional_gas": args.proportional_gas}
    return defaults.with_overrides(**overrides)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    check_args(args)
    agent = load_agent(args.ckpt, args.weights, args.device)
    load_game(args.game).drive(agent, controller_settings(args, agent.controller()), args)


if __name__ == "__main__":
    run_cli(main)
