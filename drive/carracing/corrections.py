"""Take over and teach on the embedded game: the scripted expert plays the player of drive.takeover.

The agent drives through the live loop, as in GTA V. A gate (HG-DAgger, Kelly et al. 2019) holds the
takeover key when the car leaves the road or drifts more than `max_offset` from the centre line (the
expert's racing line) and lets go once the car is back on the road, near the line and facing along it.
While it holds, the expert drives and its keys are the player's; only those stretches are recorded, as
`correction` episodes with the agent's lead-up as context. It all runs through the same Takeover as
GTA V: the agent's presses reach it marked as injected, the expert's and the gate's as the player's.

    record_takeover("runs/train/best.pt", "runs/recordings", minutes=2, seed=500)

`minutes` counts expert-labelled game time (the player's frames), the budget a DAgger round of the same
minutes spends labelling every frame the agent drives.
"""
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from data.errors import UserError
from data.labels import KEYS
from drive.agent import load_agent
from drive.carracing.game import CarRacingGame, GameSettings
from drive.carracing.evaluate import GameKeys, TrackSettings, check_agent_plays_carracing, run_track
from drive.carracing.expert import Expert, ExpertSettings
from drive.carracing.expert_recording import frame_keys, held_seconds
from drive.takeover import PLAYER, KeyEvent, Takeover, TakeoverSettings, default_context_s

GATE_KEY = "gate"  # the takeover key the gate holds


@dataclass
class GateSettings:
    max_offset: float = 5.0  # the expert takes over beyond this distance from the centre line (road half-width 6.7)
    back_offset: float = 2.0  # ... and hands back within this distance, on the road and facing along it


@dataclass
class TakeoverRecordSettings:
    latency: float = 0.1  # the agent's fixed thinking time, and the delay before the expert's plan starts
    max_tracks: int = 100  # stop after this many tracks even if the budget is not spent
    gate: GateSettings = field(default_factory=GateSettings)
    game: GameSettings = field(default_factory=GameSettings)
    expert: ExpertSettings = field(default_factory=ExpertSettings)

    def check(self, fps: float) -> None:
        if not 0 < self.latency <= 1.0 / fps:
            raise UserError(f"--latency {self.latency}: must be > 0 and at most one frame interval ({1.0 / fps:g} s)")
        if not 0 <= self.gate.back_offset <= self.gate.max_offset:
            raise UserError(f"gate offsets {self.gate.back_offset} / {self.gate.max_offset}: need 0 <= back <= max")
        if self.max_tracks < 1:
            raise UserError(f"max_tracks {self.max_tracks}: must be >= 1")


class ExpertPlayer:
    """The player of drive.takeover on the embedded game, for drive.carracing.evaluate.run_track(player=...).

    start() per track wires it to the game; grab() wraps the track's frame source: while the player
    drives, the expert decides a plan on each frame, and the keys seen down at a random instant of the
    interval after it are the player's keys for that frame — a keyboard polled at capture time, as
    drive.carracing.expert_recording stores them. The game runs that plan for the interval before the next frame."""

    def __init__(self, out_dir: Path, settings: TakeoverRecordSettings, context_s: float, budget_frames: int,
                 rng: np.random.Generator, log: Callable[[str], None] = lambda s: None):
        self.out_dir, self.s, self.context_s, self.budget, self.rng, self.log = out_dir, settings, context_s, budget_frames, rng, log
        self.episodes: list[Path] = []
        self.labelled = 0  # player frames recorded on earlier tracks
        self.takeover: Takeover | None = None

    @property
    def labelled_frames(self) -> int:
        return self.labelled + (self.takeover.player_frames if self.takeover else 0)

    def start(self, game: CarRacingGame, keys: GameKeys, realtime, seed: int) -> Callable[[dict], None]:
        """A new track; returns the hook that sees the agent's plans."""
        self.finish_track()
        self.game, self.keys = game, keys
        self.interval = 1.0 / game.profile.fps
        self.expert = Expert(dataclasses.replace(self.s.expert, decision_seconds=self.interval))
        self.expert.reset(game)
        self._queue: list[KeyEvent] = []
        self._agent_down: set[str] = set()
        self._player_down: set[str] = set()
        self._holding = False
        self._pending: dict[str, float] | None = None  # the expert's plan for the interval after its frame
        settings = TakeoverSettings(self.out_dir, self.context_s, takeover_key=GATE_KEY, fps=game.profile.fps)
        self.takeover = Takeover(settings, self.events, keys.release_all, game.profile.frame_shape, game.profile.name,
                                 self.context_s, log=self.log, name=f"takeover-seed{seed}")
        return self.agent_plan

    def finish_track(self) -> None:
        if self.takeover is not None:
            self.takeover.close()
            self.labelled += self.takeover.player_frames
            self.episodes += self.takeover.episodes
            self.takeover = None

    def agent_plan(self, hold: dict[str, float]) -> None:
        """The agent's presses, as a keyboard hook sees them: injected."""
        down = {k for k in KEYS if hold.get(k, 0.0) > 0}
        self._queue += self._changes(self._agent_down, down, injected=True)
        self._agent_down = down

    def events(self) -> list[KeyEvent]:
        """The takeover's player key source: queued key events, then the gate's."""
        out, self._queue = self._queue, []
        if self.game.done:
            return out
        t, game, gate = self.keys.game_time(), self.game, self.s.gate
        offset = self.expert.offset(game)  # also keeps the expert's track progress up to date
        if not self._holding and (not game.on_track or offset > gate.max_offset):
            self._holding = True
            out.append(KeyEvent(GATE_KEY, True, t))
        elif self._holding and game.on_track and offset <= gate.back_offset and self.expert.facing_track(game):
            self._holding = False
            out.append(KeyEvent(GATE_KEY, False, t))
            out += self._changes(self._player_down, set(), injected=False)
            self._player_down = set()
        return out

    def grab(self, capture: Callable[[], np.ndarray | None]) -> Callable[[], np.ndarray | None]:
        """The track's frame source, wrapped: the expert's last plan first runs its interval (its frame was
        captured when the plan was decided), then the frame; while the player drives, the expert decides on it."""
        def grab():
            if self._pending is not None:
                self.game.advance(self.s.latency)  # the plan in flight runs on, then the expert's starts
                self.game.advance(self.interval - self.s.latency, self._pending)
                self._pending = None
            if self.labelled_frames >= self.budget:
                return None  # the expert-labelled budget is spent: the run ends here
            frame = capture()
            if frame is not None and self.takeover.driver == PLAYER:
                self._expert_decides()
            return frame
        return grab

    def _expert_decides(self) -> None:
        game, latency, interval = self.game, self.s.latency, self.interval
        wanted = self.expert.decide(game, latency)
        held = held_seconds(game.hold, game.plan_time, latency) + held_seconds(wanted, 0.0, interval - latency)
        down = {k for k, v in zip(KEYS, frame_keys(held / interval, "sample", self.rng)) if v}
        self._queue += self._changes(self._player_down, down, injected=False)
        self._player_down = down
        self._pending = wanted

    def _changes(self, before: set[str], after: set[str], injected: bool) -> list[KeyEvent]:
        t = self.keys.game_time()
        return ([KeyEvent(k, False, t, injected) for k in sorted(before - after)]
                + [KeyEvent(k, True, t, injected) for k in sorted(after - before)])


def takeover_prefix(seed: int) -> str:
    return f"takeover-seed{seed}-"


def record_takeover(ckpt: str | Path, out_dir: str | Path, minutes: float, seed: int,
                    settings: TakeoverRecordSettings | None = None, controller: dict | None = None,
                    weights: str | None = None, device: str = "auto", log=print) -> list[Path]:
    """The checkpoint's agent drives tracks seed, seed+1, ... while the expert takes over behind the gate,
    until `minutes` of expert-labelled game time are recorded (or max_tracks). Returns the corrections
    (takeover-seed{track}-NNNN.zarr in out_dir). Use track seeds apart from the training and held-out ones."""
    settings = settings or TakeoverRecordSettings()
    out_dir = Path(out_dir)
    if not minutes > 0:
        raise UserError(f"--minutes {minutes}: must be > 0")
    if out_dir.is_dir() and any(p.name.startswith(takeover_prefix(seed)) for p in out_dir.iterdir()):
        raise UserError(f"--out {out_dir}: already holds {takeover_prefix(seed)}* episodes; choose another --seed or --out")
    agent = load_agent(ckpt, weights, device, log=log)
    check_agent_plays_carracing(agent, settings.game)
    fps = agent.profile.fps
    settings.check(fps)
    context = default_context_s(agent.seq_len, agent.stride_s, agent.contract.label_shift_s)
    player = ExpertPlayer(out_dir, settings, context, round(minutes * 60 * fps), np.random.default_rng(seed), log)
    game = CarRacingGame(settings.game)
    track_settings = TrackSettings(latency=settings.latency)
    controller_settings = agent.controller(**(controller or {}))
    try:
        for track in range(seed, seed + settings.max_tracks):
            run_track(agent, game, track, controller_settings, track_settings, player=player)
            player.finish_track()
            if player.labelled_frames >= player.budget:
                break
    finally:
        player.finish_track()
        game.close()
    log(f"{len(player.episodes)} correction(s), {player.labelled_frames} expert-labelled frames "
        f"({player.labelled_frames / fps / 60:.2f} min) on tracks {seed}-{track}")
    return player.episodes
