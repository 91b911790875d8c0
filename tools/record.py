"""Record gameplay: screen frames + the w/a/s/d keys held, one episode per pause/resume.

    python -m tools.record --profile gta5 --out runs/recordings
    python -m tools.record --profile gta5 --out runs/recordings --kind stuck --pad-seconds 4
"""
import argparse
from pathlib import Path

from data.errors import run_cli
from data.key_input import default_key_source
from data.profiles import available_profiles, load_profile
from data.recorder import Recorder, RecorderSettings
from data.screen import Region, ScreenSource, find_window_region


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tools.record", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Press the pause key (T) in the game to start recording; press it again to "
                                       "pause. Every resume starts a new episode. Ctrl-C stops.")
    p.add_argument("--profile", default="gta5", help=f"game profile: {', '.join(available_profiles())} or a .toml path")
    p.add_argument("--out", type=Path, default=Path("runs/recordings"), help="recordings directory (default: %(default)s)")
    p.add_argument("--kind", default="regular", help="label stored with each episode: regular, stuck, turns, ...")
    p.add_argument("--pad-seconds", type=float, default=0.0,
                   help="stuck recordings: seconds to hold still at the start of each episode (never used for training)")
    p.add_argument("--discard-seconds", type=float, default=0.0,
                   help="drop the last seconds of an episode on pause (the crash you paused for)")
    p.add_argument("--fps", type=float, help="target frames per second (default: the profile's)")
    p.add_argument("--region", type=Region.parse, help="capture LEFT,TOP,WIDTH,HEIGHT instead of finding the window")
    p.add_argument("--window", help="window title to capture (default: the profile's)")
    p.add_argument("--pause-key", default="t", help="pause/resume hotkey (default: %(default)s)")
    p.add_argument("--minutes", type=float, help="stop after this many minutes")
    args = p.parse_args()

    profile = load_profile(args.profile)
    region = args.region or find_window_region(args.window or profile.window_title)
    if (region.width, region.height) != profile.capture_size:
        print(f"warning: capturing {region.width}x{region.height}, profile {profile.name} expects "
              f"{profile.capture_size[0]}x{profile.capture_size[1]}; frames are resized to {profile.frame_size}")
    settings = RecorderSettings(
        out_dir=args.out, profile=profile, kind=args.kind, fps=args.fps, pad_seconds=args.pad_seconds,
        discard_seconds=args.discard_seconds, pause_key=args.pause_key.lower(),
        max_seconds=args.minutes * 60 if args.minutes else None,
        capture={"region": [region.left, region.top, region.width, region.height],
                 "frame_size": list(profile.frame_size)})
    Recorder(settings, ScreenSource(region), default_key_source((settings.pause_key,))).run()


if __name__ == "__main__":
    run_cli(main)
