"""The embedded CarRacing game behind python -m drive (--game carracing / carracing_hood): a single
track, or --eval on held-out tracks next to the expert."""
import argparse
from pathlib import Path

from data.atomic import write_text
from data.errors import UserError, require
from data.flags import Seeds, parse_seeds
from data.paths import check_writable
from data.profiles import load_profile
from drive.agent import Agent
from drive.carracing.evaluate import (TrackSettings, check_agent_plays_carracing, evaluate_agent, evaluate_expert,
                                      expert_latency, format_table, run_track)
from drive.carracing.game import CarRacingGame, GameSettings, check_latency
from drive.carracing.hood_game import game_view
from drive.controller import ControllerSettings
from drive.video import VideoWriter, check_video_path

NAMES = ("carracing", "carracing_hood")  # the embedded game's top-down and hood views
DEFAULT_SEED = 1000  # tools.record --expert records tracks 0, 1, 2, ... by default: drive elsewhere
DEFAULT_SEEDS = "1000-1009"
FLAGS = ("latency", "seed", "max_steps", "traffic", "video", "eval", "seeds", "table")  # this game's options


def add_arguments(p: argparse.ArgumentParser) -> None:
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


def check(args) -> None:
    """Every refusal that needs no file read, before anything is loaded or written."""
    if args.traffic is not None and args.traffic < 0:
        raise UserError(f"--traffic {args.traffic}: must be >= 0 cars")
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
    if args.seed is not None:
        require(args.seed >= 0, "--seed", args.seed, "a track number >= 0")


def drive(agent: Agent, controller: ControllerSettings, args) -> None:
    seeds = (args.seeds or parse_seeds(DEFAULT_SEEDS)) if args.eval else []
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
        note = f"\n\nnote: the backbone has {agent.extractor.backbone.weights_label}\n" if agent.extractor.backbone.is_random else ""
        write_text(args.table, table + note)  # a random backbone is named in the file too, not only on the console
        print(f"table: {args.table}")



