"""Drive with a trained head: the embedded CarRacing game (default), or GTA V through the screen.

    python -m drive --ckpt runs/train/best.pt                          # one CarRacing track, wall time
    python -m drive --ckpt runs/train/best.pt --latency 0.1 --video drive.mp4
    python -m drive --ckpt runs/train/best.pt --eval --seeds 1000-1009 --latency 0.1 --table eval.md
    python -m drive --game carracing_hood --ckpt runs/hood/best.pt --eval --latency 0.1 --traffic 5
    python -m drive --ckpt runs/gta/best.pt --game gta5 [--region 0,0,800,600] [--telemetry drive.jsonl]
    python -m drive --ckpt runs/gta/best.pt --game gta5 --record-corrections recordings/corrections
"""
import argparse
import dataclasses
import os
from pathlib import Path

from data.errors import UserError, require, run_cli
from data.flags import Renamed, Seeds
from data.paths import check_writable
from data.profiles import load_profile
from data.screen import Region
from drive.agent import Agent, load_agent
from drive.carracing import CarRacingGame, GameSettings, check_latency
from drive.controller import ControllerSettings
from drive.gta5.scancodes import key_name
from drive.takeover import TakeoverSettings, default_context_s
from drive.hood_game import game_view
from drive.evaluate import (TrackSettings, check_agent_plays_carracing, evaluate_agent, evaluate_expert,
                            expert_latency, format_table, parse_seeds, run_track)
from drive.gta5.session import KEY_OUTPUTS, GtaOptions, drive_gta5 as drive_gta5_window
from drive.loop import MODES, LoopSettings
from drive.video import VideoWriter, check_video_path

GAMES = ("carracing", "carracing_hood", "gta5")  # the embedded game's top-down and hood views, GTA V
DEFAULT_SEED = 1000  # tools.record --expert records tracks 0, 1, 2, ... by default: drive elsewhere
DEFAULT_SEEDS = "1000-1009"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m drive", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--ckpt", type=Path, required=True, help="checkpoint from python -m train_head (best.pt)")
    p.add_argument("--game", choices=GAMES, default="carracing",
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
    cr = p.add_argument_group("carracing")
    cr.add_argument("--latency", type=float,
                    help="fixed thinking time in seconds: reproducible runs (default: the measured wall time)")
    cr.add_argument("--seed", type=int, help=f"track seed of a single run (default: {DEFAULT_SEED})")
    cr.add_argument("--max-steps", type=int,
                    help=f"physics steps per track, 50 per second (default: {GameSettings.max_steps}, the game's limit)")
    cr.add_argument("--traffic", type=int, help="traffic cars per track (default: the profile's, 5 for "
                    "carracing_hood; 0: none); a crash costs reward")
    cr.add_argument("--video", type=Path, help="mp4 of the run (with --eval: of the first track)")
    cr.add_argument("--eval", action="store_true", help="score the agent and the expert on --seeds, print the table")
    cr.add_argument("--seeds", nargs="+", action=Seeds,
                    help=f"held-out track seeds for --eval: A-B, a list, or both (default: {DEFAULT_SEEDS})")
    cr.add_argument("--table", type=Path, help="also write the --eval table to this markdown file")
    g = p.add_argument_group("gta5")
    g.add_argument("--keys", choices=KEY_OUTPUTS,
                   help="key output (default: sendinput on Windows, keyboard elsewhere; virtual presses nothing)")
    g.add_argument("--region", type=Region.parse, help="capture LEFT,TOP,WIDTH,HEIGHT instead of finding the window")
    g.add_argument("--window", help="window title to capture (default: the profile's)")
    g.add_argument("--no-hotkeys", action="store_true", help="no quit/pause/steer hotkeys (Ctrl-C still stops)")
    g.add_argument("--max-seconds", type=float, help="stop after this many seconds (default: no limit)")
    g.add_argument("--countdown", type=float, help="seconds from the game window having focus to driving, at the "
                   f"start and after every switch back (default: {GtaOptions.countdown_s:g})")
    g.add_argument("--first-frame", type=Path, help="PNG of the first frame the agent sees "
                   f"(default: {GtaOptions.first_frame})")
    t = p.add_argument_group("take over and teach (gta5)")
    t.add_argument("--record-corrections", type=Path, metavar="DIR",
                   help="press w/a/s/d (or hold --takeover-key) to take over from the agent; what you drive is "
                        "recorded into DIR as `correction` episodes, the agent's lead-up as context")
    t.add_argument("--context", type=float, help="seconds of the agent's lead-up kept before a takeover "
                   "(default: one sequence plus the label shift, from the checkpoint)")
    t.add_argument("--handback", type=float, default=TakeoverSettings.handback_s,
                   help="the agent drives again after this many seconds with no key of yours down (default: %(default)s)")
    t.add_argument("--takeover-key", default=TakeoverSettings.takeover_key,
                   help="held: you drive; released: the agent drives again at once (default: %(default)s)")
    t.add_argument("--correction-fps", type=float, default=TakeoverSettings.fps,
                   help="frames per second recorded while you drive, about the agent's decision rate (default: %(default)s)")
    return p


CARRACING_ONLY = ("latency", "seed", "max_steps", "traffic", "video", "eval", "seeds", "table")
GTA5_ONLY = ("keys", "region", "window", "no_hotkeys", "max_seconds", "countdown", "first_frame", "record_corrections",
             "context")


def check_args(args) -> None:
    """Every refusal that needs no file read, before anything is loaded or written."""
    other, game = (CARRACING_ONLY, "carracing") if args.game == "gta5" else (GTA5_ONLY, "gta5")
    if args.traffic is not None and args.traffic < 0:
        raise UserError(f"--traffic {args.traffic}: must be >= 0 cars")
    misplaced = [name for name in other if getattr(args, name) is not None and getattr(args, name) is not False]
    if misplaced:
        raise UserError(f"--{misplaced[0].replace('_', '-')} works with --game {game} only")
    if args.game != "gta5":
        game_view(load_profile(args.game), args.traffic)  # refuses traffic on the top-down view
        if args.eval and args.telemetry:
            raise UserError("--telemetry works for a single run; leave out --eval")
        if args.eval and args.max_decisions:
            raise UserError("--max-decisions works for a single run; --eval drives every track to its end")
        if args.table and not args.eval:
            raise UserError("--table is written by --eval; add --eval --seeds A-B")
        if args.table:
            check_writable(args.table, "--table")
        check_latency(args.latency)
        if args.video:
            check_video_path(args.video)
        if args.max_steps is not None and args.max_steps < 1:
            raise UserError(f"--max-steps {args.max_steps}: must be at least 1")
    if args.telemetry and args.telemetry.exists():
        raise UserError(f"{args.telemetry}: already exists; choose a new --telemetry file")
    if args.telemetry:
        check_writable(args.telemetry, "--telemetry")
    if args.max_decisions < 0:
        raise UserError(f"--max-decisions {args.max_decisions}: must be >= 0")
    if args.record_corrections is not None:
        takeover_settings(args).check()
    require(0 < args.watchdog <= 60, "--watchdog", args.watchdog, "> 0 seconds (and at most 60)")
    if args.seed is not None:
        require(args.seed >= 0, "--seed", args.seed, "a track number >= 0")
    if args.max_seconds is not None:
        require(args.max_seconds > 0, "--max-seconds", args.max_seconds, "> 0 seconds")
    if args.countdown is not None:
        require(0 <= args.countdown <= 600, "--countdown", args.countdown, "between 0 and 600 seconds")
    controller_settings(args, ControllerSettings()).check()


def takeover_settings(args) -> TakeoverSettings:
    return TakeoverSettings(out_dir=args.record_corrections, context_s=args.context, handback_s=args.handback,
                            takeover_key=key_name(args.takeover_key, "--takeover-key"), fps=args.correction_fps)


def controller_settings(args, defaults: ControllerSettings) -> ControllerSettings:
    overrides = {"max_steer": args.max_steer, "steer_gain": args.steer_gain, "gas_threshold": args.gas_threshold,
                 "brake_threshold": args.brake_threshold, "proportional": False if args.thresholded else None,
                 "proportional_gas": args.proportional_gas}
    return ControllerSettings(**{**dataclasses.asdict(defaults), **{k: v for k, v in overrides.items() if v is not None}})


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    check_args(args)
    seeds = (args.seeds or parse_seeds(DEFAULT_SEEDS)) if args.eval else []
    agent = load_agent(args.ckpt, args.weights, args.device)
    controller = controller_settings(args, agent.controller())
    if args.game == "gta5":
        return drive_gta5(agent, controller, args)
    game_settings = GameSettings(max_steps=args.max_steps or GameSettings.max_steps, profile=args.game,
                                 traffic=args.traffic)
    check_agent_plays_carracing(agent, game_settings)
    if args.eval:
        return run_eval(agent, controller, seeds, game_settings, args)

    settings = TrackSettings(latency=args.latency, mode=args.mode, watchdog_s=args.watchdog,
                             max_decisions=args.max_decisions)
    seed = DEFAULT_SEED if args.seed is None else args.seed
    game = CarRacingGame(game_settings)
    try:
        if args.video:
            with VideoWriter(args.video, fps=1.0 / (args.latency or 0.1)) as writer:
                run, _ = run_track(agent, game, seed, controller, settings, writer, args.telemetry, print)
            print(f"video: {args.video}")
        else:
            run, _ = run_track(agent, game, seed, controller, settings, None, args.telemetry, print)
    finally:
        game.close()
    print(f"track {run.seed}: reward {run.reward:.1f}, tiles {run.tile_share:.1%} ({run.tiles_visited}/{run.tiles_total}), "
          f"off-track {run.off_track_events}, crashes {run.crashes}, steer rate {run.steer_rate:.2f} rad/s, "
          f"{run.decisions_per_s:.1f} decisions per game second, {'lap finished' if run.lap_finished else 'no full lap'}")


def run_eval(agent: Agent, controller: ControllerSettings, seeds: list[int], game_settings: GameSettings, args) -> None:
    timing = f"latency {args.latency:g} s" if args.latency else "wall time"
    print(f"evaluating {agent.path} on {len(seeds)} tracks ({timing}, {'proportional' if controller.proportional else 'thresholded'} "
          f"steering, gain {controller.steer_gain:g}, max steer {controller.max_steer:g}, {'proportional' if controller.proportional_gas else 'thresholded'} gas)")
    runs = evaluate_agent(agent, seeds, args.latency, controller, game_settings, args.mode, args.video)
    latency = args.latency or expert_latency(runs)
    name = f"expert @ {latency:g} s" + ("" if args.latency else " (the agent's mean interval)")
    results = {"agent": runs, name: evaluate_expert(seeds, latency, game_settings),
               "expert @ 0 s": evaluate_expert(seeds, 0.0, game_settings)}
    table = format_table(results, compare=("agent", name))
    print(table)
    decisions, wall = sum(r.decisions for r in runs), sum(r.wall_s for r in runs)
    print(f"agent compute: {decisions} decisions in {wall:.1f} s wall clock = {decisions / wall:.1f} decisions/s "
          f"(render + backbone + head, {agent.device})")
    if agent.extractor.backbone.is_random:
        print(f"note: the backbone has {agent.extractor.backbone.weights_label}")
    if args.video:
        print(f"video: {args.video}")
    if args.table:
        random = agent.extractor.backbone.is_random  # named in the file too, not only on the console
        write_text_atomic(args.table, table + (f"\n\nnote: the backbone has {agent.extractor.backbone.weights_label}\n"
                                               if random else ""))
        print(f"table: {args.table}")


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def drive_gta5(agent: Agent, controller: ControllerSettings, args) -> None:
    loop = LoopSettings(seq_len=agent.seq_len, stride_s=agent.stride_s, mode=args.mode, watchdog_s=args.watchdog,
                        recording_fps=agent.profile.fps, max_decisions=args.max_decisions,
                        max_seconds=args.max_seconds or 0.0, telemetry_path=args.telemetry)
    takeover = None
    if args.record_corrections is not None:
        takeover = takeover_settings(args)
        if takeover.context_s is None:
            takeover = dataclasses.replace(takeover, context_s=default_context_s(
                agent.seq_len, agent.stride_s, float(agent.settings.get("label_shift_s", 0.0))))
    options = GtaOptions(keys=args.keys, region=args.region, window=args.window, hotkeys=not args.no_hotkeys,
                         takeover=takeover,
                         **{k: v for k, v in (("countdown_s", args.countdown), ("first_frame", args.first_frame))
                            if v is not None})
    drive_gta5_window(agent, controller, loop, options)


if __name__ == "__main__":
    run_cli(main)
