"""The live decision loop, written against injected parts so any game, backbone and head can plug in.

    grab → [preprocess → features (backbone + reduction, newest frame only) → ring buffer → select by
    time → head → sigmoid: drive.agent.SequenceSteps] → controller → key scheduler

mode "recompute" is the seed's way, kept for the benchmark: a ring of preprocessed frames, and the
backbone runs on every frame of the sequence at each decision.

Safety: keys are released on quit, pause, any exception, Ctrl-C and SIGTERM (release_keys_on_exit) and
at interpreter exit (KeyScheduler). The watchdog is the scheduler itself: no hold, not even "until the
next decision", outlasts watchdog_s, so a stalled loop lets go of every key.
"""
import dataclasses
import importlib
import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from data.errors import UserError
from data.labels import KEYS
from drive.controller import ControllerSettings, decide
from drive.keys import KeyOutput, release_keys_on_exit
from drive.agent import MODES, SequenceSteps
from drive.takeover import PLAYER, Takeover

STAGES = ("capture", "preprocess", "backbone", "head", "total")


@dataclass
class LoopSettings:
    seq_len: int = 3
    stride_s: float = 0.25  # sequence stride in seconds, from the checkpoint
    mode: str = "ring"  # "ring": backbone on the newest frame only; "recompute": on every sequence frame
    ring_capacity: int = 256
    watchdog_s: float = 0.5  # every key is released when no decision arrives for this long
    first_interval_s: float = 0.1  # controller interval for the first decision after a start or resume
    recording_fps: float = 0.0  # fps of the training recordings, to print the label shift (0: skip)
    max_decisions: int = 0  # stop after this many decisions (0: no limit)
    max_seconds: float = 0.0  # stop after this many seconds (0: no limit)
    telemetry_path: Path | None = None  # JSONL, one line per decision; must not exist yet
    pause_poll_s: float = 0.05
    quit_key: str = "t"  # the seed's hotkeys
    pause_key: str = "n"
    steer_less_key: str = "x"
    steer_more_key: str = "b"
    steer_step: float = 0.05  # max_steer change per steer hotkey press
    focus_countdown_s: float = 3.0  # with a focus check: drive this long after the game window has focus
    status_every_s: float = 0.5  # the live status line's refresh period

    def check(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"--mode {self.mode}: choose one of {', '.join(MODES)}")
        if self.seq_len < 1 or not self.stride_s > 0:
            raise UserError(f"sequence length {self.seq_len} / stride {self.stride_s} s: need >= 1 and > 0")
        if self.ring_capacity < self.seq_len:
            raise UserError(f"--ring-capacity {self.ring_capacity}: must hold at least seq_len={self.seq_len}")
        if not self.watchdog_s > 0:
            raise UserError(f"--watchdog {self.watchdog_s}: must be > 0 seconds")
        if self.telemetry_path is not None and Path(self.telemetry_path).exists():
            raise UserError(f"{self.telemetry_path}: already exists; choose a new --telemetry file")


def no_hotkeys() -> Iterable[str]:
    return ()


@dataclass
class DriveParts:
    grab: Callable[[], np.ndarray | None]  # the newest frame (H, W, 3) RGB uint8; None when the game ended
    preprocess_fn: Callable[[np.ndarray], torch.Tensor]  # one frame → model input, stage 1's own code
    features_fn: Callable[[torch.Tensor], torch.Tensor]  # (N, ...) inputs → (N, ...) features: backbone + reduction
    head_fn: Callable[[torch.Tensor], torch.Tensor]  # (1, seq_len, ...) features → 4 logits for w, a, s, d
    scheduler: KeyOutput  # a KeyScheduler over a key sink, or a game's adapter
    hotkeys: Callable[[], Iterable[str]] = no_hotkeys  # names of hotkeys pressed since the last call
    sync: Callable[[], None] = lambda: None  # torch.cuda.synchronize on a GPU, so stage times are honest
    focused: Callable[[], bool] | None = None  # whether the game window has focus; None: no focus check
    status: Callable[[str], None] | None = None  # shows the one-line live status (replaced in place)
    sleep: Callable[[float], None] = time.sleep  # waits while paused
    takeover: Takeover | None = None  # the player may grab control; their corrections are recorded


class HotkeyQueue:
    """A hotkey source anything can feed: put(name) from any thread; the loop drains it by calling it."""

    def __init__(self):
        self._names: list[str] = []
        self._lock = threading.Lock()

    def put(self, name: str) -> None:
        with self._lock:
            self._names.append(name)

    def __call__(self) -> list[str]:
        with self._lock:
            names, self._names = self._names, []
        return names


class KeyboardHotkeys(HotkeyQueue):
    """Hotkeys from the global keyboard hook of the `keyboard` package; close() removes the hook."""

    def __init__(self, names: Iterable[str]):
        super().__init__()
        try:
            self._keyboard = importlib.import_module("keyboard")
        except ImportError:
            raise UserError("hotkeys need the `keyboard` package: pip install keyboard") from None
        self._hooks = [self._keyboard.add_hotkey(name, self.put, args=(name,)) for name in names]

    def close(self) -> None:
        for hook in self._hooks:
            self._keyboard.remove_hotkey(hook)


class Telemetry:
    """JSONL lines flushed as written: a line per decision, per event (pause, error, ...), summary last."""

    def __init__(self, path: Path | None):
        self.file = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.file = open(path, "x")

    def write(self, record: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class DriveSummary:
    decisions: int
    active_s: float  # driving time, pauses excluded
    decisions_per_s: float
    latency_ms: dict[str, dict[str, float | None]]  # stage → {"p50": ..., "p95": ...}; None: no decisions
    key_share: dict[str, float]  # share of driving time each key was held
    watchdog_releases: int  # decisions that found a held key already let go by the watchdog
    label_shift_frames: int | None  # p50 capture-to-keys latency in recording frames
    stopped_by: str  # quit, source_end, max_decisions, max_seconds, or the exception's name

    def text(self) -> str:
        lat = self.latency_ms["total"]
        if not self.decisions:
            return f"no decisions; stopped by {self.stopped_by}"
        lines = [f"{self.decisions} decisions in {self.active_s:.1f} s: {self.decisions_per_s:.2f} decisions/s, "
                 f"latency p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms (capture to keys); "
                 f"stopped by {self.stopped_by}",
                 "keys held: " + ", ".join(f"{k} {self.key_share[k]:.0%}" for k in KEYS)]
        if self.watchdog_releases:
            lines.append(f"watchdog released keys {self.watchdog_releases} times")
        if self.label_shift_frames is not None:
            lines.append(f"label shift to train with: {self.label_shift_frames} frames "
                         f"(p50 latency {lat['p50']:.1f} ms)")
        return "\n".join(lines)


@dataclass
class _Run:
    controller: ControllerSettings
    steps: SequenceSteps
    start: float
    held_at_start: dict[str, float]
    decisions: int = 0
    last_decision: float | None = None
    expect_held: frozenset = frozenset()
    watchdog_releases: int = 0
    paused_since: float | None = None
    paused_s: float = 0.0
    paused_by: set = field(default_factory=set)  # "hotkey", "focus"
    resume_at: float | None = None  # focus is back: drive from this time on
    last_status: float = -math.inf
    recent: deque = field(default_factory=lambda: deque(maxlen=20))  # (decision time, total latency s)
    driver: str = "agent"
    latencies: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})


def drive(parts: DriveParts, controller: ControllerSettings, settings: LoopSettings,
          log: Callable[[str], None] = print) -> DriveSummary:
    """Drive until quit, the end of the frame source, a limit, or an error; keys are released on every way
    out. Returns (and logs, and writes last to telemetry) the summary."""
    settings.check()
    controller.check()
    clock = parts.scheduler.clock
    with Telemetry(settings.telemetry_path) as telemetry, release_keys_on_exit(parts.scheduler):
        start = clock()
        steps = SequenceSteps(parts.preprocess_fn, parts.features_fn, parts.head_fn, settings.seq_len, settings.stride_s,
                              settings.mode, settings.ring_capacity, clock, parts.sync)
        run = _Run(controller, steps, start, parts.scheduler.held_seconds(start))
        if parts.focused is not None:
            _pause(parts, run, telemetry, start, "focus")  # every start waits for the game, then counts down
        stopped_by, error = "", None
        try:
            stopped_by = _loop(parts, settings, run, telemetry, log)
        except BaseException as e:
            stopped_by, error = type(e).__name__, e
            raise
        finally:
            parts.scheduler.release_all()  # first: writing logs may be slow or fail
            if parts.takeover is not None:
                parts.takeover.close(complete=error is None)
            if error is not None:
                telemetry.write({"event": "error", "t": clock() - start, "error": f"{type(error).__name__}: {error}"})
            summary = _summary(parts.scheduler, settings, run, stopped_by, clock())
            telemetry.write({"event": "summary", **dataclasses.asdict(summary)})
            log(summary.text())
    return summary


def _loop(parts, settings, run, telemetry, log) -> str:
    clock = parts.scheduler.clock
    while True:
        now = clock()
        if settings.max_decisions and run.decisions >= settings.max_decisions:
            return "max_decisions"
        if settings.max_seconds and now - run.start >= settings.max_seconds:
            return "max_seconds"
        for name in parts.hotkeys():
            name = name.lower()
            if name == settings.quit_key:
                return "quit"
            if name == settings.pause_key:
                if "hotkey" in run.paused_by:
                    _resume(run, telemetry, log, now, "hotkey", "resumed")
                else:
                    _pause(parts, run, telemetry, now, "hotkey")
                    log("paused")
            elif name in (settings.steer_less_key, settings.steer_more_key):
                step = settings.steer_step if name == settings.steer_more_key else -settings.steer_step
                max_steer = round(min(1.0, max(0.0, run.controller.max_steer + step)), 6)
                run.controller = dataclasses.replace(run.controller, max_steer=max_steer)
                telemetry.write({"event": "max_steer", "t": now - run.start, "max_steer": max_steer})
                log(f"max steer {max_steer:.2f}")
        if parts.focused is not None:
            _follow_focus(parts, settings, run, telemetry, log, now)
        if run.paused_by:
            parts.sleep(settings.pause_poll_s)
            continue
        if parts.takeover is not None and _player_drives(parts, run, telemetry, log, now):
            frame = parts.grab()
            if frame is None:
                return "source_end"
            parts.takeover.record(frame, clock())
            if parts.status is not None and now - run.last_status >= settings.status_every_s:
                parts.status(f"player drives | recording a correction | held {''.join(k for k in KEYS if k in parts.takeover.held) or '-'}")
                run.last_status = now
            continue
        if not _decide_once(parts, settings, run, telemetry):
            return "source_end"


def _stop_agent(parts, run) -> None:
    parts.scheduler.release_all()
    run.steps.reset()
    run.last_decision = None
    run.expect_held = frozenset()


def _player_drives(parts, run, telemetry, log, now) -> bool:
    """Polls the takeover; on a change of driver the agent starts afresh. The status line says who drives."""
    was = run.driver
    run.driver = parts.takeover.poll(now)
    if run.driver != was:
        if run.driver == PLAYER:
            _stop_agent(parts, run)  # the takeover released the keys already; this forgets the agent's history
        telemetry.write({"event": "driver", "t": now - run.start, "driver": run.driver})
        log(f"[{run.driver} drives]")
    return run.driver == PLAYER


def _pause(parts, run, telemetry, now, reason: str) -> None:
    if not run.paused_by:
        _stop_agent(parts, run)
        run.paused_since = now
    run.paused_by.add(reason)
    telemetry.write({"event": "pause", "t": now - run.start, "by": reason})


def _resume(run, telemetry, log, now, reason: str, message: str) -> None:
    run.paused_by.discard(reason)
    if not run.paused_by:
        run.paused_s += now - run.paused_since
        run.paused_since = None
    telemetry.write({"event": "resume", "t": now - run.start, "by": reason})
    log(message if not run.paused_by else f"still paused ({', '.join(sorted(run.paused_by))})")


def _follow_focus(parts, settings, run, telemetry, log, now) -> None:
    """Pause (every key released) while the game window lacks focus; drive again focus_countdown_s after
    it has focus back."""
    if not parts.focused():
        run.resume_at = None
        if "focus" not in run.paused_by:
            _pause(parts, run, telemetry, now, "focus")
            log("paused: the game window lost focus, every key released; click into the game to go on")
    elif "focus" in run.paused_by:
        if run.resume_at is None:
            run.resume_at = now + settings.focus_countdown_s
            log(f"the game window has focus: driving in {settings.focus_countdown_s:g} s")
        elif now >= run.resume_at:
            run.resume_at = None
            _resume(run, telemetry, log, now, "focus", "driving")


def _decide_once(parts, settings, run, telemetry) -> bool:
    clock, scheduler = parts.scheduler.clock, parts.scheduler
    t0 = clock()
    frame = parts.grab()
    if frame is None:
        return False
    t_capture = clock()
    if parts.takeover is not None:
        parts.takeover.observe(frame, t_capture)
    probs = run.steps.step(frame, t_capture)
    t_pre, t_backbone, t_head = run.steps.times
    seq = run.steps.sequence

    if parts.focused is not None and not parts.focused():
        return True  # focus went while the model ran: no keys for another window; the loop pauses next
    interval = settings.first_interval_s if run.last_decision is None else t_head - run.last_decision
    hold = decide(probs, interval, run.controller)
    released_by_watchdog = run.expect_held - scheduler.held_keys()
    if released_by_watchdog:
        run.watchdog_releases += 1
        telemetry.write({"event": "watchdog", "t": t_head - run.start, "keys": sorted(released_by_watchdog)})
    scheduler.apply({k: min(v, settings.watchdog_s) for k, v in hold.items()}, now=t_head)
    t_keys = clock()
    run.last_decision = t_head
    run.expect_held = frozenset(k for k, v in hold.items() if math.isinf(v))
    run.decisions += 1
    run.recent.append((t_head, t_keys - t0))
    if parts.status is not None and t_keys - run.last_status >= settings.status_every_s:
        who = "agent drives | " if parts.takeover is not None else ""
        parts.status(who + status_line(probs, scheduler.held_keys(), run.recent))
        run.last_status = t_keys

    ms = dict(zip(STAGES, (t_capture - t0, t_pre - t_capture, t_backbone - t_pre, t_head - t_backbone,
                           t_keys - t0)))
    for stage, seconds in ms.items():
        run.latencies[stage].append(seconds * 1000)
    telemetry.write({
        "event": "decision", "i": run.decisions - 1, "t_capture": t_capture - run.start,
        "t_keys": t_keys - run.start, "interval_s": interval,
        "ms": {s: round(v * 1000, 3) for s, v in ms.items()},
        "probs": [round(float(p), 4) for p in probs],
        "hold_s": {k: None if math.isinf(v) else round(v, 4) for k, v in hold.items()},  # null: until next
        "seq_age_s": [round(t_capture - e.t, 4) for e in seq],
    })
    return True


def status_line(probs, held: frozenset, recent) -> str:
    """p(w/a/s/d), the keys held now, decisions/s and latency over the last few decisions."""
    (first, _), (last, _) = recent[0], recent[-1]
    rate = (len(recent) - 1) / (last - first) if last > first else 0.0
    latency = float(np.median([seconds for _, seconds in recent])) * 1000
    p = " ".join(f"{k} {v:.2f}" for k, v in zip(KEYS, probs))
    return (f"p {p} | held {''.join(k for k in KEYS if k in held) or '-':4} | {rate:4.1f} decisions/s | "
            f"latency {latency:5.1f} ms")


def _summary(scheduler: KeyOutput, settings: LoopSettings, run: _Run, stopped_by: str, now: float
             ) -> DriveSummary:
    paused = run.paused_s + (now - run.paused_since if run.paused_since is not None else 0.0)
    active = max(now - run.start - paused, 1e-9)
    held = scheduler.held_seconds(now)
    latency = {s: {q: float(np.percentile(v, int(q[1:]))) if v else None for q in ("p50", "p95")}
               for s, v in run.latencies.items()}
    p50 = latency["total"]["p50"]
    shift = round(p50 / 1000 * settings.recording_fps) if settings.recording_fps and p50 is not None else None
    return DriveSummary(
        decisions=run.decisions, active_s=active, decisions_per_s=run.decisions / active,
        latency_ms=latency, key_share={k: (held[k] - run.held_at_start[k]) / active for k in KEYS},
        watchdog_releases=run.watchdog_releases, label_shift_frames=shift, stopped_by=stopped_by)
