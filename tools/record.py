"""Record gameplay (screen frames + w/a/s/d keys), or the scripted expert driving the embedded CarRacing game.

Screen: one episode per pause/resume. Expert: one episode per track, tracks seed, seed+1, ...

    python -m tools.record --game gta5 --out runs/recordings
    python -m tools.record --game gta5 --out runs/recordings --kind stuck --pad-seconds 4
    python -m tools.record --game carracing --expert --minutes 10 --seed 0 --out runs/recordings
    python -m tools.record --game carracing_hood --expert --minutes 10 --traffic 5 --out runs/hood   # hood camera
    python -m tools.record --game carracing --expert --dagger runs/train/best.pt --minutes 3 --seed 500 --latency 0.1
    python -m tools.record --game carracing --expert --takeover runs/train/best.pt --minutes 2 --seed 500 --latency 0.1
"""
import argparse
from dataclasses import replace
from pathlib import Path

from data.episode import Episode
from data.errors import UserError, disk_faults, run_cli
from data.flags import Renamed
from data.profiles import available_profiles, load_profile
from data.recorder import Recorder, RecorderSettings
from data.screen import Region

EMBEDDED = ["carracing", "carracing_hood"]  # the embedded game's profiles: top-down and hood views


def record_carracing_expert(args, p: argparse.ArgumentParser) -> None:
    from drive.carracing.game import GameSettings  # gymnasium loads only for the embedded game
    from drive.carracing.expert_recording import RecordSettings, record_expert
    from drive.carracing.hood_game import game_view

    if not (args.game in EMBEDDED and args.expert):
        raise UserError("the embedded game is recorded by its scripted expert: pass both --game carracing and --expert "
                        "(or --game carracing_hood)")
    screen_only = [f for f in ("kind", "pad_seconds", "discard_seconds", "fps", "region", "window", "pause_key")
                   if getattr(args, f) != p.get_default(f)]
    if screen_only:
        raise UserError(f"--{screen_only[0].replace('_', '-')} is for screen recording; leave it out with --expert")
    if args.minutes is None:
        raise UserError("--expert needs --minutes M: how many minutes of game time to record")
    settings = RecordSettings(game=GameSettings(profile=args.game or "carracing", traffic=args.traffic))
    if args.traffic is not None:
        game_view(load_profile(settings.game.profile), args.traffic)  # refuses traffic on the top-down view
    for name in ("stuck_share", "perturb_every", "latency"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    seed = args.seed or 0
    done = [0]

    def progress(path: Path, stats) -> None:
        episode = Episode(path)
        done[0] += len(episode)
        print(f"{path.name}: track {stats.seed}, {len(episode)} frames, {stats.tile_share:.0%} of tiles, "
              f"reward {stats.reward:.0f}; {done[0] / episode.fps / 60:.1f} of {args.minutes:g} min", flush=True)

    if args.takeover is not None:
        from drive.carracing.corrections import TakeoverRecordSettings, record_takeover
        if args.dagger is not None or args.stuck_share is not None or args.perturb_every is not None:
            raise UserError("--takeover records the expert's corrections only: leave out --dagger, --stuck-share "
                            "and --perturb-every")
        paths = record_takeover(args.takeover, args.out, args.minutes, seed,
                                TakeoverRecordSettings(latency=args.latency or TakeoverRecordSettings.latency))
    elif args.dagger is not None:
        from drive.carracing.dagger import record_dagger
        if args.perturb_every is None:
            settings.perturb_every = 0.0  # the agent makes its own mistakes
        paths = record_dagger(args.dagger, args.out, args.minutes, seed, settings, on_episode=progress)
    else:
        paths = record_expert(args.out, args.minutes, seed=seed, settings=settings, on_episode=progress)
    print(f"{len(paths)} episodes in {args.out}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.record", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Press the pause key (T) in the game to start recording; press it again to "
                                       "pause. Every resume starts a new episode. Ctrl-C stops.")
    p.add_argument("--game", "--profile", dest="game", action=Renamed, default="gta5",
                   help=f"game profile: {', '.join(available_profiles())} or a .toml path; {' and '.join(EMBEDDED)} "
                        f"are the embedded game, recorded with --expert; --profile is its deprecated old name "
                        f"(default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("runs/recordings"), help="recordings directory (default: %(default)s)")
    p.add_argument("--kind", default="regular", help="label stored with each episode: regular, stuck, turns, ...")
    p.add_argument("--pad-seconds", type=float, default=0.0,
                   help="stuck recordings: seconds to hold still at the start of each episode (never used for training)")
    p.add_argument("--discard-seconds", type=float, default=0.0,
                   help="drop the last seconds of an episode on pause (the crash you paused for)")
    p.add_argument("--fps", type=float, help="target frames per second (default: the profile's)")
    p.add_argument("--region", type=Region.parse, help="capture LEFT,TOP,WIDTH,HEIGHT instead of finding the window")
    p.add_argument("--window", help="window title to capture (default: the profile's)")
    p.add_argument("--pause-key", default="t", help="pause/resume hotkey: a letter, digit, f1..f12, space, ... "
                   "(the key at that place on a US keyboard; default: %(default)s)")
    p.add_argument("--minutes", type=float, help="stop after this many minutes (--expert: game minutes to record)")
    expert = p.add_argument_group("embedded game (python -m tools.record --game carracing --expert --minutes M)")
    expert.add_argument("--traffic", type=int, help="traffic cars per track (default: the profile's, 5 for "
                        "carracing_hood; 0: none)")
    expert.add_argument("--expert", action="store_true", help="the scripted expert drives (one episode per track)")
    expert.add_argument("--seed", type=int, help="first track seed; episode i drives track seed + i (default: 0)")
    expert.add_argument("--stuck-share", type=float,
                        help="share of episodes that start stuck off the road and recover (default: 0.2)")
    expert.add_argument("--perturb-every", type=float,
                        help="mean seconds between pushes off the line that the expert recovers from; the stored "
                             "keys stay the expert's (recovery data; default: 2, 0: none)")
    expert.add_argument("--latency", type=float,
                        help="seconds between a frame and the expert's keys for it, at most one frame interval "
                             "(default: 0; then train with --label-shift equal to the drive latency)")
    expert.add_argument("--dagger", type=Path, metavar="CKPT",
                        help="DAgger: this checkpoint's agent drives, the expert's keys are stored (episodes "
                             "dagger-seed*; record with the --latency you drive at, on track seeds of their own)")
    expert.add_argument("--takeover", type=Path, metavar="CKPT",
                        help="take over and teach: this checkpoint's agent drives, the expert takes over when it "
                             "leaves the road or drifts off the line; only those stretches are recorded (kind "
                             "correction, episodes takeover-seed*; --minutes counts the expert's frames; "
                             "--latency default 0.1)")
    args = p.parse_args(argv)
    if args.game in EMBEDDED or args.expert:
        with disk_faults(args.out, kept="the episodes finished before are kept"):
            return record_carracing_expert(args, p)
    for flag in ("seed", "stuck_share", "perturb_every", "latency", "dagger", "takeover", "traffic"):
        if getattr(args, flag) is not None:
            raise UserError(f"--{flag.replace('_', '-')} works with --game carracing --expert only")

    from drive.gta5.capture import WindowCapture
    from drive.gta5.key_reader import default_key_source
    from drive.gta5.scancodes import key_name
    from drive.gta5.session import GtaOptions, System, locate_game

    pause_key = key_name(args.pause_key, "--pause-key")
    profile = load_profile(args.game)
    settings = RecorderSettings(  # checks the numbers before any window is looked for
        out_dir=args.out, profile=profile, kind=args.kind, fps=args.fps, pad_seconds=args.pad_seconds,
        discard_seconds=args.discard_seconds, pause_key=pause_key,
        max_seconds=args.minutes * 60 if args.minutes is not None else None)
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out}: is a file; give a directory for the recordings")
    system = System.real()
    window, region = locate_game(system.api, profile, GtaOptions(region=args.region, window=args.window), print)
    if (region.width, region.height) != profile.capture_size:
        print(f"warning: capturing {region.width}x{region.height}, profile {profile.name} expects "
              f"{profile.capture_size[0]}x{profile.capture_size[1]}; frames are resized to {profile.frame_size}")
    frames = WindowCapture(system.screen(region), profile.frame_size, None if args.region else window, None)
    settings = replace(settings, capture={"region": [region.left, region.top, region.width, region.height],
                                          "frame_size": list(profile.frame_size)})
    Recorder(settings, frames, default_key_source(system.api, (settings.pause_key,))).run()


if __name__ == "__main__":
    run_cli(main)
