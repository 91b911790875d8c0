"""GTA V behind python -m drive --game gta5: the screen in, SendInput (or the keyboard package) out, with
take-over and teach (--record-corrections)."""
import argparse
import dataclasses
from pathlib import Path

from data.errors import require
from data.screen import Region
from drive.agent import Agent
from drive.controller import ControllerSettings
from drive.gta5.scancodes import key_name
from drive.gta5.session import KEY_OUTPUTS, GtaOptions, drive_gta5 as drive_gta5_window
from drive.loop import LoopSettings
from drive.takeover import TakeoverSettings, default_context_s

NAMES = ("gta5",)
FLAGS = ("keys", "region", "window", "no_hotkeys", "max_seconds", "countdown", "first_frame", "record_corrections",
         "context")  # this game's options


def add_arguments(p: argparse.ArgumentParser) -> None:
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


def check(args) -> None:
    """Every refusal that needs no file read, before anything is loaded or written."""
    if args.record_corrections is not None:
        takeover_settings(args).check()
    if args.max_seconds is not None:
        require(args.max_seconds > 0, "--max-seconds", args.max_seconds, "> 0 seconds")
    if args.countdown is not None:
        require(0 <= args.countdown <= 600, "--countdown", args.countdown, "between 0 and 600 seconds")


def takeover_settings(args) -> TakeoverSettings:
    return TakeoverSettings(out_dir=args.record_corrections, context_s=args.context, handback_s=args.handback,
                            takeover_key=key_name(args.takeover_key, "--takeover-key"), fps=args.correction_fps)


def drive(agent: Agent, controller: ControllerSettings, args) -> None:
    loop = LoopSettings(seq_len=agent.seq_len, stride_s=agent.stride_s, mode=args.mode, watchdog_s=args.watchdog,
                        recording_fps=agent.profile.fps, max_decisions=args.max_decisions,
                        max_seconds=args.max_seconds or 0.0, telemetry_path=args.telemetry)
    takeover = None
    if args.record_corrections is not None:
        takeover = takeover_settings(args)
        if takeover.context_s is None:
            takeover = dataclasses.replace(takeover, context_s=default_context_s(
                agent.seq_len, agent.stride_s, agent.contract.label_shift_s))
    options = GtaOptions(keys=args.keys, region=args.region, window=args.window, hotkeys=not args.no_hotkeys,
                         takeover=takeover,
                         **{k: v for k, v in (("countdown_s", args.countdown), ("first_frame", args.first_frame))
                            if v is not None})
    drive_gta5_window(agent, controller, loop, options)


