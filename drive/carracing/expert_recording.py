"""Expert demonstrations for CarRacing, recorded into the same episode format as a human recording.

One episode per track: track seeds seed, seed+1, ... A share of the episodes starts stuck: the car is
put on the grass beside the road, turned away from it, sits still for a short pre-roll (pad_frames),
then the expert drives back onto the road and on for a moment.

Keys stored with a frame are the keys seen down at a random instant of the interval after it, like a
keyboard polled at capture time by a player whose taps are not in step with the frames. So a key
held for 30 % of every interval is stored as pressed in ~30 % of the frames, which is what proportional
steering reproduces at drive time ("half" or "any" would turn every short tap into 0 or 1).

Recovery data (DART, Laskey et al. 2017): with `perturb_every` > 0 the car is now and then pushed off
its line — a steer key held for a moment against the expert's will — while the stored keys stay the
ones the expert wants. A model trained only on clean laps never sees the car off its line, so it has
no idea how to get back once its own small errors put it there.

DAgger (Ross et al. 2011): with a `pilot` (drive.carracing.dagger.AgentPilot, a trained agent) the pilot drives
and the expert only says which keys it would press; those are stored. The recordings then hold the
states the agent itself gets into, labelled with the way out.
"""
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from data.episode import EpisodeMeta, EpisodeWriter
from data.errors import UserError, require
from data.labels import KEYS
from data.profiles import load_profile
from drive.carracing.game import PLAYFIELD, ROAD_HALF_WIDTH, CarRacingGame, GameSettings, TrackStats
from drive.carracing.expert import Expert, ExpertSettings

LABEL_RULES = ("sample", "half", "any")


@dataclass
class RecordSettings:
    stuck_share: float = 0.2  # share of episodes that start stuck off the road
    stuck_pad_seconds: float = 1.0  # still pre-roll of a stuck episode, stored as pad_frames
    stuck_recovered_seconds: float = 2.0  # a stuck episode ends this long after the car is back on course
    stuck_max_seconds: float = 15.0
    label_rule: str = "sample"  # "sample" (random instant), "half" (held >= half the interval), "any"
    latency: float = 0.0  # the expert's plan starts this long after its frame, as the agent's will (<= 1/fps)
    perturb_every: float = 2.0  # mean seconds between pushes off the line (0: none)
    perturb_seconds: tuple[float, float] = (0.2, 0.5)  # how long a push holds its steer key, drawn uniformly
    game: GameSettings = field(default_factory=GameSettings)
    expert: ExpertSettings = field(default_factory=ExpertSettings)

    def check(self) -> None:
        if not 0.0 <= self.stuck_share <= 1.0:
            raise UserError(f"--stuck-share {self.stuck_share}: must be a share in [0, 1]")
        if self.label_rule not in LABEL_RULES:
            raise UserError(f"--label-rule {self.label_rule!r}: choose one of {', '.join(LABEL_RULES)}")
        if self.latency < 0:
            raise UserError(f"--latency {self.latency}: must be >= 0 seconds")
        if self.perturb_every < 0 or not 0 < self.perturb_seconds[0] <= self.perturb_seconds[1]:
            raise UserError(f"--perturb-every {self.perturb_every}: must be >= 0 seconds "
                            f"(and perturb_seconds a range of positive seconds)")
        if self.stuck_pad_seconds < 0 or self.stuck_recovered_seconds < 0 or self.stuck_max_seconds <= 0:
            raise UserError("stuck_pad_seconds and stuck_recovered_seconds must be >= 0, stuck_max_seconds > 0")


def held_seconds(hold: dict[str, float], start: float, seconds: float) -> np.ndarray:
    """(4,) seconds each of w, a, s, d is down during [start, start + seconds) of a hold plan."""
    return np.array([min(max(hold.get(k, 0.0) - start, 0.0), seconds) for k in KEYS])


def frame_keys(held_share: np.ndarray, rule: str, rng: np.random.Generator) -> np.ndarray:
    """(4,) uint8 w, a, s, d stored for a frame, from the share of its interval each key was down."""
    held_share = np.asarray(held_share)
    if rule == "sample":
        return (rng.random() < held_share).astype(np.uint8)  # one instant for all keys, like one keyboard poll
    if rule == "half":
        return (held_share >= 0.5).astype(np.uint8)
    return (held_share > 0).astype(np.uint8)


class Pilot(Protocol):
    """Drives instead of the expert while the expert's keys are recorded (see drive.carracing.dagger)."""

    name: str  # episodes are named {name}-seed{seed}-...

    def reset(self) -> None: ...

    def __call__(self, frame: np.ndarray, t: float) -> dict[str, float]: ...


def episode_prefix(seed: int, driver: str = "expert") -> str:
    return f"{driver}-seed{seed}-"


def record_expert(out_dir: str | Path, minutes: float, seed: int = 0, settings: RecordSettings | None = None,
                  on_episode: Callable[[Path, TrackStats], None] | None = None,
                  pilot: Pilot | None = None) -> list[Path]:
    """Record `minutes` of expert game time at the carracing profile's fps; returns the episode paths.

    Episodes are named expert-seed{seed}-{index:03d}-{kind}.zarr (with a pilot: {pilot.name}-seed...)
    and carry the track seed in their attributes (`track_seed`). Refuses to write next to episodes of
    an earlier run with the same seed and driver.
    """
    settings = settings or RecordSettings()
    settings.check()
    if not minutes > 0:
        raise UserError(f"--minutes {minutes}: must be > 0")
    require(seed >= 0, "--seed", seed, "a track number >= 0")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: is a file; give a directory for the recordings")
    prefix = episode_prefix(seed, pilot.name if pilot else "expert")
    if out_dir.is_dir() and any(p.name.startswith(prefix) for p in out_dir.iterdir()):
        raise UserError(f"--out {out_dir}: already holds {prefix}* episodes of --seed {seed}; "
                        "choose another --seed or --out (episodes are never overwritten)")

    fps = load_profile(settings.game.profile).fps
    if settings.latency > 1.0 / fps:
        raise UserError(f"--latency {settings.latency}: at most one frame interval ({1.0 / fps:g} s) when recording")
    game = CarRacingGame(settings.game)
    expert_settings = dataclasses.replace(settings.expert, decision_seconds=1.0 / fps)
    rng = np.random.default_rng(seed)
    frames_left = round(minutes * 60 * fps)
    paths = []
    try:
        while frames_left > 0:
            index = len(paths)
            # a stuck start needs room for its still pre-roll and some driving after it
            stuck = bool(rng.random() < settings.stuck_share) and frames_left > 3 * settings.stuck_pad_seconds * fps
            kind = "stuck" if stuck else "regular"
            path = out_dir / f"{prefix}{index:03d}-{kind}.zarr"
            stats, n = _record_episode(path, game, Expert(expert_settings), seed + index, stuck, frames_left,
                                       settings, rng, pilot)
            frames_left -= n
            paths.append(path)
            if on_episode is not None:
                on_episode(path, stats)
    finally:
        game.close()
    return paths


def _record_episode(path: Path, game: CarRacingGame, expert: Expert, track_seed: int, stuck: bool,
                    max_frames: int, settings: RecordSettings, rng: np.random.Generator,
                    pilot: Pilot | None = None) -> tuple[TrackStats, int]:
    interval, latency = expert.settings.decision_seconds, settings.latency
    fps = game.profile.fps
    game.reset(track_seed)
    pad = round(settings.stuck_pad_seconds * fps) if stuck else 0
    if stuck:
        _place_stuck(game, rng)
    expert.reset(game)
    if pilot is not None:
        pilot.reset()
    meta = EpisodeMeta(fps=fps, kind="stuck" if stuck else "regular", pad_frames=min(pad, max_frames),
                       profile=game.profile.name, source=pilot.name if pilot else "expert",
                       capture={"size": list(game.profile.capture_size), "frame_size": list(game.profile.frame_size)})
    limit = min(max_frames, pad + round(settings.stuck_max_seconds * fps)) if stuck else max_frames
    recovered_frames = round(settings.stuck_recovered_seconds * fps)
    n, on_course = 0, 0
    wanted_in_flight: dict[str, float] = {}  # the expert's plan behind the one in flight (they differ in a push)
    push_left, push_key = 0.0, "a"
    with EpisodeWriter(path, game.profile.frame_shape, meta) as writer:
        while n < limit and not game.done:
            frame = game.frame()
            wanted = {} if n < pad else expert.decide(game, latency)
            # the plan in flight runs on for `latency`, then the new one starts; the wanted keys are stored
            held = (held_seconds(wanted_in_flight, game.plan_time, latency)
                    + held_seconds(wanted, 0.0, interval - latency))
            writer.append(frame, frame_keys(held / interval, settings.label_rule, rng), n * interval)
            push_now = settings.perturb_every > 0 and rng.random() < interval / settings.perturb_every
            if n >= pad and push_left <= 0 and push_now:
                push_left, push_key = rng.uniform(*settings.perturb_seconds), str(rng.choice(["a", "d"]))
            sent = pilot(frame, n * interval) if pilot is not None and n >= pad else wanted
            if push_left > 0:
                sent = {**sent, "a": 0.0, "d": 0.0, push_key: math.inf if push_left >= interval else push_left}
                push_left -= interval
            game.advance(latency)
            game.advance(interval - latency, sent)
            wanted_in_flight = wanted
            n += 1
            if stuck and n > pad:
                on_course = on_course + 1 if game.on_track and expert.facing_track(game) else 0
                if on_course >= recovered_frames:
                    break
        writer.close(track_seed=track_seed, label_rule=settings.label_rule, latency=latency,
                     perturb_every=settings.perturb_every,
                     expert=dataclasses.asdict(expert.settings))
    return game.stats, n


def _place_stuck(game: CarRacingGame, rng: np.random.Generator) -> None:
    """Put the car on the grass 3-10 units beside the road, turned 30-150 degrees away from its direction."""
    track = game.track_xy
    for _ in range(100):
        i = int(rng.integers(len(track)))
        ahead = track[(i + 1) % len(track)] - track[i]
        direction = math.atan2(ahead[1], ahead[0])
        side = rng.choice((-1.0, 1.0))
        offset = ROAD_HALF_WIDTH + rng.uniform(3.0, 10.0)
        x = track[i, 0] - side * offset * math.sin(direction)
        y = track[i, 1] + side * offset * math.cos(direction)
        turn = rng.uniform(math.radians(30), math.radians(150)) * rng.choice((-1.0, 1.0))
        if np.min(np.hypot(track[:, 0] - x, track[:, 1] - y)) < ROAD_HALF_WIDTH + 3.0:
            continue  # another stretch of road passes close by
        if max(abs(x), abs(y)) > PLAYFIELD - 30.0:
            continue  # too close to the edge of the map, where the env ends the run
        game.place_car(x, y, direction + turn)
        if not game.on_track:
            return
    raise RuntimeError(f"no off-road spot found for a stuck start on track {game.stats.seed}")
