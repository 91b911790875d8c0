"""Driving GTA V: the game window found and followed, keys only while it has focus, a live status line.

All of Windows comes in through a System, so tests run this whole path on Linux with fakes.
"""
import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from data.errors import UserError
from data.screen import Region
from drive.gta5.capture import ScreenSource, WindowCapture, describe
from drive.gta5.hotkeys import HotkeyPoller
from drive.gta5.key_reader import ScanCodeKeys
from drive.gta5.scancodes import key_name
from drive.gta5.send_input import FocusedOnlySink, SendInputSink
from drive.gta5.win32 import WindowsApi, precise_sleep, raise_thread_priority
from drive.gta5.window import GameWindow, WindowSpec, find_game_window
from drive.keys import KeyboardPackageSink, KeyScheduler, RecordingSink, fine_thread_switching
from drive.gta5.player_keys import PlayerKeyHook, Win32HookApi
from drive.loop import DriveParts, KeyboardHotkeys, LoopSettings, drive
from drive.takeover import KeyEvent, Takeover, TakeoverSettings

KEY_OUTPUTS = ("sendinput", "keyboard", "virtual")


@dataclass
class System:
    """The operating system as the GTA V path sees it; defaults are the real one."""

    api: WindowsApi | None  # None outside Windows: no window finding, focus check or SendInput
    screen: Callable[[Region], ScreenSource] = ScreenSource
    clock: Callable[[], float] = time.perf_counter
    precise_sleep: Callable[[float], None] = field(default_factory=precise_sleep)  # the key scheduler's last stretch
    sleep: Callable[[float], None] = time.sleep  # polling while paused, the start countdown without a focus check
    out: Callable[[str], None] = print
    player_keys: Callable[[str], Callable[[], list[KeyEvent]]] | None = None  # takeover key -> player key events

    @classmethod
    def real(cls) -> "System":
        if sys.platform != "win32":
            return cls(api=None)
        from drive.gta5.win32 import User32
        return cls(api=User32(), player_keys=lambda key: PlayerKeyHook(Win32HookApi(), key).start())


@dataclass(frozen=True)
class GtaOptions:
    """What python -m drive --game gta5 was told (defaults are the CLI's)."""

    keys: str | None = None  # sendinput (default on Windows), keyboard (default elsewhere), virtual
    region: Region | None = None  # capture this instead of the window's client area
    window: str | None = None  # window title (default: the profile's)
    hotkeys: bool = True
    countdown_s: float = 3.0  # after the game window has focus (or, without a focus check, after the start)
    first_frame: Path | None = Path("runs/drive/first_frame.png")
    takeover: TakeoverSettings | None = None  # the player may take over; corrections are recorded (context_s resolved)


class StatusPrinter:
    """The live status on one line, rewritten in place; other lines print below it, not through it."""

    def __init__(self, write: Callable[[str], None]):
        self.write, self.open = write, False

    def status(self, line: str) -> None:
        self.write(f"\r{line:<100}")
        self.open = True

    def log(self, line: str) -> None:
        self.write(("\n" if self.open else "") + line + "\n")
        self.open = False


def hotkey_names(loop: LoopSettings) -> list[str]:
    return [key_name(getattr(loop, f), f"--{f.replace('_', '-')}")
            for f in ("quit_key", "pause_key", "steer_less_key", "steer_more_key")]


def drive_gta5(agent, controller, loop: LoopSettings, options: GtaOptions, system: System | None = None):
    if not options.countdown_s >= 0:
        raise UserError(f"--countdown {options.countdown_s}: must be >= 0 seconds")
    system = system or System.real()
    profile, out = agent.profile, system.out
    names = hotkey_names(loop)
    window, region = locate_game(system.api, profile, options, out)
    if (region.width, region.height) != profile.capture_size:
        out(f"warning: capturing {region.width}x{region.height}, profile {profile.name} expects "
            f"{profile.capture_size[0]}x{profile.capture_size[1]}; frames are resized to {profile.frame_size}")
    printer = StatusPrinter(lambda text: print(text, end="", flush=True))
    capture = WindowCapture(system.screen(region), profile.frame_size, None if options.region else window,
                            options.first_frame, printer.log)
    sink_name = options.keys or ("sendinput" if system.api is not None else "keyboard")
    sink = _sink(sink_name, system)
    if window is not None:
        sink = FocusedOnlySink(sink, window.focused)
    hotkeys = None
    if options.hotkeys:
        hotkeys = HotkeyPoller(ScanCodeKeys(system.api, tuple(names))) if system.api else KeyboardHotkeys(names)
    scheduler = KeyScheduler(sink, clock=system.clock, sleep=system.precise_sleep, on_thread_start=raise_thread_priority)
    player_keys = takeover = None
    try:
        if options.takeover is not None:
            if system.player_keys is None:
                raise UserError("--record-corrections works on Windows only (it reads your keys through a keyboard hook)")
            teach = options.takeover
            player_keys = system.player_keys(teach.takeover_key)
            takeover = Takeover(teach, player_keys, scheduler.release_all, profile.frame_shape, profile.name,
                                teach.context_s, log=printer.log)
            out(f"take over: press w/a/s/d or hold {teach.takeover_key}; corrections go to {teach.out_dir}")
        keys_help = (f"{names[0]} quits, {names[1]} pauses/resumes, {names[2]}/{names[3]} lower/raise max steer"
                     if hotkeys else "none (Ctrl-C stops)")
        out(f"keys: {sink_name}; hotkeys: {keys_help}")
        if window is not None:
            out(f"keys go to the game only while its window has focus; switch to it: driving starts "
                f"{options.countdown_s:g} s after it has focus (switching away pauses)")
        else:
            out("warning: no focus check outside Windows; keys go to whatever window has focus")
            if options.countdown_s > 0:
                out(f"switch to the game: driving starts in {options.countdown_s:g} s")
                system.sleep(options.countdown_s)
        parts = DriveParts(grab=capture.grab, preprocess_fn=agent.preprocess_fn, features_fn=agent.features_fn,
                           head_fn=agent.head_fn, scheduler=scheduler, hotkeys=hotkeys or (lambda: ()),
                           sync=_sync(agent), focused=window.focused if window is not None else None,
                           status=printer.status, sleep=system.sleep, takeover=takeover)
        loop = dataclasses.replace(loop, focus_countdown_s=options.countdown_s)
        with fine_thread_switching():
            return drive(parts, controller, loop, log=printer.log)
    finally:
        scheduler.close()
        if hotkeys is not None:
            hotkeys.close()
        if player_keys is not None and hasattr(player_keys, "close"):
            player_keys.close()


def locate_game(api: WindowsApi | None, profile, options: GtaOptions, out) -> tuple[GameWindow | None, Region]:
    """The game window (None outside Windows) and the rectangle to capture; the recorder uses it too."""
    if api is None:
        if options.region is None:
            raise UserError("finding the game window works on Windows only; pass --region LEFT,TOP,WIDTH,HEIGHT")
        return None, options.region
    title = options.window or profile.window_title
    spec = WindowSpec(title, profile.window_classes, None if options.region else profile.capture_size)
    hwnd = find_game_window(api, spec)
    window = GameWindow(api, hwnd)
    region = options.region or window.region()
    out(f"game window {title!r} (class {api.class_name(hwnd)}): capturing {describe(region)}")
    return window, region


def _sink(name: str, system: System):
    if name == "sendinput":
        if system.api is None:
            raise UserError("--keys sendinput works on Windows only; use --keys keyboard or --keys virtual")
        return SendInputSink(system.api)
    if name == "keyboard":
        return KeyboardPackageSink()
    return RecordingSink(system.clock)


def _sync(agent):
    if agent.device.type == "cuda":
        import torch
        return lambda: torch.cuda.synchronize(agent.device)
    return lambda: None
