"""Closed-loop driving on the embedded CarRacing game: one track, an evaluation over track seeds, the table.

The agent drives through the same live loop as in GTA V (drive.loop.drive); the game runs on while the
model thinks (drive.carracing.RealTimeGame). With a fixed latency every clock is game time, so a run
gives the same numbers every time; without one, the measured wall time is emulated. The expert is
scored on the same tracks at the same latency, and at 0 (its best).
"""
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from data.errors import UserError
from data.labels import KEYS
from data.progress import progress
from drive.agent import Agent, load_agent
from drive.carracing.game import STEP_SECONDS, CarRacingGame, GameSettings, RealTimeGame, TrackStats
from drive.controller import ControllerSettings
from drive.carracing.expert import score_expert
from drive.carracing.expert_recording import held_seconds as plan_held_seconds
from drive.loop import DriveParts, DriveSummary, LoopSettings, drive
from drive.video import VideoWriter, annotate


@dataclass
class TrackRun(TrackStats):
    """TrackStats plus how often the driver decided."""

    decisions: int = 0
    wall_s: float = 0.0  # wall-clock seconds the run took (rendering and the model included)

    @property
    def decisions_per_s(self) -> float:
        """Decisions per second of game time."""
        return self.decisions / self.seconds if self.steps else 0.0


@dataclass
class TrackSettings:
    latency: float | None = 0.1  # fixed thinking time in seconds (reproducible); None: measured wall time
    mode: str = "ring"  # the loop's mode: ring or recompute
    watchdog_s: float = 0.5
    max_decisions: int = 0  # 0: until the game ends (lap finished or its step limit)


class GameKeys:
    """KeyOutput for the embedded game: a plan goes to RealTimeGame.send, which first runs the game under
    the previous plan for the thinking time. Clock: game time with a fixed latency, else wall time."""

    def __init__(self, realtime: RealTimeGame, on_plan: Callable[[dict[str, float]], None] | None = None):
        self.realtime, self.game, self.on_plan = realtime, realtime.game, on_plan
        self.clock = realtime.clock if realtime.latency is None else self.game_time
        self._held = np.zeros(len(KEYS))  # seconds each key was down under plans that have ended

    def game_time(self) -> float:
        return self.game.stats.steps * STEP_SECONDS + self.game.owed

    def apply(self, hold: dict[str, float], now: float | None = None) -> None:
        self._switch(lambda: self.realtime.send(hold))
        if self.on_plan is not None:
            self.on_plan(hold)

    def release_all(self) -> None:
        self._switch(lambda: self.game.press({}))

    def held_keys(self) -> frozenset[str]:
        return frozenset(k for k, v in self.game.hold.items() if v > self.game.plan_time)

    def held_seconds(self, now: float | None = None) -> dict[str, float]:
        current = plan_held_seconds(self.game.hold, 0.0, self.game.plan_time)
        return dict(zip(KEYS, (self._held + current).tolist()))

    def _switch(self, press: Callable[[], object]) -> None:
        old, plan_time, steps = self.game.hold, self.game.plan_time, self.game.stats.steps
        press()
        self._held += plan_held_seconds(old, 0.0, plan_time + (self.game.stats.steps - steps) * STEP_SECONDS)


class TrackVideo:
    """The 600x400 screen at each decision with the probabilities and the keys pressed, at game speed."""

    def __init__(self, writer: VideoWriter):
        self.writer = writer
        self.screen: np.ndarray | None = None
        self.probs = np.zeros(4)
        self.written_s = 0.0  # game time covered by the frames written so far
        self.last_decision_s = 0.0

    def capture(self, screen: np.ndarray) -> None:
        self.screen = screen

    def decision(self, game: CarRacingGame, hold: dict[str, float], now_s: float) -> None:
        """Called once the plan is pressed: the game has run to `now_s`, the end of this frame's span."""
        if self.screen is None:
            return
        interval = max(now_s - self.last_decision_s, STEP_SECONDS)
        pressed = [float(hold[k] > 0) if k in "ws" else min(1.0, hold[k] / interval) for k in KEYS]
        s = game.stats
        image = annotate(self.screen, self.probs, pressed, lines=(
            f"track {s.seed}  {s.seconds:5.1f} s", f"reward {s.reward:6.1f}",
            f"tiles {s.tile_share:4.0%}  off-track {s.off_track_events}")
            + ((f"crashes {s.crashes}",) if len(game.traffic) else ()))
        frame_s = 1.0 / self.writer.fps
        while self.written_s + frame_s / 2 <= now_s:
            self.writer.write(image)
            self.written_s += frame_s
        self.last_decision_s, self.screen = now_s, None


def run_track(agent: Agent, game: CarRacingGame, seed: int, controller: ControllerSettings, settings: TrackSettings,
              video: VideoWriter | None = None, telemetry: Path | None = None,
              log: Callable[[str], None] = lambda s: None, player=None) -> tuple[TrackRun, DriveSummary]:
    """The agent drives one track until the game ends; returns its score and the loop's summary.
    player: one who may take over (drive.carracing.corrections.ExpertPlayer): it sees the agent's plans, owns the
    frames while it drives, and its Takeover records the corrections."""
    game.reset(seed)
    if settings.latency is None:
        agent.warm_up()  # the game runs on in wall time: the first call's set-up cost would be thinking time
    film = TrackVideo(video) if video is not None else None
    realtime = RealTimeGame(game, settings.latency)
    keys = GameKeys(realtime, on_plan=(lambda hold: film.decision(game, hold, keys.game_time())) if film else None)
    if player is not None:
        keys.on_plan = player.start(game, keys, realtime, seed)

    def grab():
        if game.done:
            return None
        frame = realtime.capture()
        if film is not None:
            film.capture(game.screen())
        return frame

    def head_fn(features):
        logits = agent.head_fn(features)
        if film is not None:
            film.probs = torch.sigmoid(logits.float()).reshape(-1).cpu().numpy()
        return logits

    watchdog = settings.watchdog_s
    if settings.latency is not None:  # game time: a thinking time beyond the watchdog is a choice, not a stall
        watchdog = max(watchdog, 2 * settings.latency)
    loop = LoopSettings(seq_len=agent.seq_len, stride_s=agent.stride_s, mode=settings.mode, watchdog_s=watchdog,
                        first_interval_s=settings.latency or 0.1,
                        recording_fps=agent.profile.fps, max_decisions=settings.max_decisions,
                        telemetry_path=telemetry)
    parts = DriveParts(grab=player.grab(grab) if player else grab, preprocess_fn=agent.preprocess_fn,
                       features_fn=agent.features_fn, head_fn=head_fn, scheduler=keys,
                       takeover=player.takeover if player else None)
    start = time.perf_counter()
    summary = drive(parts, controller, loop, log=log)
    run = TrackRun(**dataclasses.asdict(game.stats), decisions=summary.decisions,
                   wall_s=time.perf_counter() - start)
    return run, summary


def check_agent_plays_carracing(agent: Agent, game_settings: GameSettings) -> None:
    if agent.profile.name != game_settings.profile:
        raise UserError(f"{agent.path}: trained on {agent.profile.name} frames, not {game_settings.profile}; "
                        f"drive it with --game {agent.profile.name}")


def evaluate_agent(agent: Agent | str | Path, seeds: list[int], latency: float | None = 0.1,
                   controller: ControllerSettings | dict | None = None, game_settings: GameSettings | None = None,
                   mode: str = "ring", video: str | Path | None = None, weights: str | None = None,
                   device: str = "auto", log: Callable[[str], None] = print) -> list[TrackRun]:
    """The agent's score on each track seed. controller: settings, or overrides of the checkpoint's
    defaults (e.g. {"max_steer": 0.5, "proportional": False}). video: an .mp4 of the first track."""
    if not isinstance(agent, Agent):
        agent = load_agent(agent, weights, device, log=log)
    if not isinstance(controller, ControllerSettings):
        controller = agent.controller(**(controller or {}))
    game_settings = game_settings or GameSettings(profile=agent.profile.name)
    check_agent_plays_carracing(agent, game_settings)
    settings = TrackSettings(latency=latency, mode=mode)
    game = CarRacingGame(game_settings)
    runs = []
    try:
        for i, seed in enumerate(progress(seeds, desc="evaluating", unit="track")):
            if i == 0 and video is not None:
                with VideoWriter(video, fps=1.0 / (latency or STEP_SECONDS * 5)) as writer:
                    run, _ = run_track(agent, game, seed, controller, settings, video=writer)
            else:
                run, _ = run_track(agent, game, seed, controller, settings)
            log(f"track {seed}: reward {run.reward:.1f}, tiles {run.tile_share:.1%}, off-track {run.off_track_events}, "
                f"{run.decisions} decisions in {run.wall_s:.1f} s")
            runs.append(run)
    finally:
        game.close()
    return runs


def evaluate_expert(seeds: list[int], latency: float = 0.0, game_settings: GameSettings | None = None) -> list[TrackRun]:
    """The scripted expert's score on each track seed, deciding every `latency` s (every 0.1 s at 0)."""
    interval = latency or 0.1  # drive.carracing.expert.ExpertSettings.decision_seconds
    return [TrackRun(**dataclasses.asdict(stats), decisions=math.ceil(round(stats.seconds / interval, 6)))
            for stats in score_expert(seeds, game_settings, latency=latency)]


def expert_latency(runs: list[TrackRun]) -> float:
    """A fixed latency matching a wall-time run: its mean decision interval, in whole physics steps."""
    decisions = sum(r.decisions for r in runs)
    mean = sum(r.seconds for r in runs) / decisions if decisions else 0.1
    return max(1, round(mean / STEP_SECONDS)) * STEP_SECONDS


def _spread(values: list[float], fmt: str) -> str:
    v = np.asarray(values, dtype=float)
    if len(v) == 1:
        return format(v[0], fmt)
    return f"{format(v.mean(), fmt)} ± {format(v.std(), fmt)} [{format(v.min(), fmt)}, {format(v.max(), fmt)}]"


def format_table(results: dict[str, list[TrackStats]], compare: tuple[str, str] | None = None) -> str:
    """A markdown table: a row per track and driver, then a total per driver (mean ± std [min, max] for
    reward and tiles, means for the rest). results: driver name → stats on the same seeds, in order.
    compare: (driver, reference): adds a line with the driver's mean reward as a share of the reference's."""
    lines = ["| track | driver | reward | tiles % | off-track | crashes | steer rate rad/s | decisions/s (game) | lap |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    names = list(results)
    n_tracks = len(results[names[0]]) if names else 0
    if any(len(runs) != n_tracks for runs in results.values()):
        raise ValueError("every driver must be scored on the same tracks")

    def rate(run: TrackStats) -> str:
        return f"{run.decisions_per_s:.1f}" if isinstance(run, TrackRun) else "–"

    for i in range(n_tracks):
        for name in names:
            r = results[name][i]
            lines.append(f"| {r.seed} | {name} | {r.reward:.1f} | {100 * r.tile_share:.1f} | {r.off_track_events} | "
                         f"{r.crashes} | {r.steer_rate:.2f} | {rate(r)} | {'yes' if r.lap_finished else 'no'} |")
    for name in names:
        runs = results[name]
        rates = [r.decisions_per_s for r in runs if isinstance(r, TrackRun)]
        lines.append(f"| all {len(runs)} | {name} | {_spread([r.reward for r in runs], '.1f')} | "
                     f"{_spread([100 * r.tile_share for r in runs], '.1f')} | "
                     f"{np.mean([r.off_track_events for r in runs]):.1f} | {np.mean([r.crashes for r in runs]):.1f} | "
                     f"{np.mean([r.steer_rate for r in runs]):.2f} | "
                     f"{f'{np.mean(rates):.1f}' if rates else '–'} | {sum(r.lap_finished for r in runs)}/{len(runs)} |")
    if compare is not None and n_tracks:
        driver, reference = compare
        ours, theirs = (float(np.mean([r.reward for r in results[k]])) for k in (driver, reference))
        share = f"{100 * ours / theirs:.1f} %" if theirs > 0 else "n/a (reference reward <= 0)"
        lines += ["", f"{driver} mean reward is {share} of {reference}'s ({n_tracks} track{'s' * (n_tracks != 1)})"]
    return "\n".join(lines) + "\n"
