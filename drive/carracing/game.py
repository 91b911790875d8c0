"""The embedded game: gymnasium's CarRacing-v3 with the two faces of GTA V, frames and held keys.

Keys: w gas, s brake, a/d steer. A hold plan (see drive.controller) says how many seconds each key is
held from the start of a decision. The physics runs at 50 Hz; in each 20 ms step a key counts for the
share of the step it was down, so a/d held for 13 ms of a step steer with 0.65 of full lock. Mind the
steering physics: the front wheels turn at most ~0.06 rad per step toward the steer target (full lock
is 0.4 rad) and swing back toward centre when the key is released, so a key held for a share of an
interval is a steering *rate*, not an angle.

Rendering is the expensive part (~7 ms a frame with road_culling, 12 without, against ~1 ms for the 5 physics
steps of a frame), so the physics is stepped here without the env's per-step 96x96 render and a frame is
drawn only when asked for.
The first second of every track is CarRacing's zoom-in animation; frames show it like the env does.
"""
import math
import time
from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np
from gymnasium.envs.box2d.car_dynamics import Car
from gymnasium.envs.box2d.car_racing import FPS, PLAYFIELD, TRACK_WIDTH

from data.errors import UserError, require
from data.labels import KEYS
from data.profiles import load_profile, to_frame_size
from drive.carracing import hood_game as hood
from drive.carracing.road_culling import cull_road

STEP_SECONDS = 1.0 / FPS
RENDER_SIZE = (600, 400)  # (width, height) of CarRacing's rgb_array render
WHEELBASE = 3.24  # front to rear axle of CarRacing's car, in world units
MAX_WHEEL_ANGLE = 0.4  # the front wheels' joint limit, radians
ROAD_HALF_WIDTH = TRACK_WIDTH


@dataclass
class GameSettings:
    max_steps: int = 1000  # CarRacing-v3's own time limit (gym.make wraps it in TimeLimit(1000)): 20 s
    brake_strength: float = 0.8  # s held for a whole step; gymnasium's keyboard play uses 0.8 (>= 0.9 locks wheels)
    profile: str = "carracing"  # stored frame size and HUD rectangles come from this game profile
    traffic: int | None = None  # traffic cars per track (None: the profile's [game] traffic, else 0)


@dataclass
class TrackStats:
    """The score of one run on one track."""

    seed: int | None = None
    steps: int = 0
    reward: float = 0.0  # the env's step rewards (+1000/N per new tile, -0.1 per step, -100 off the map), less crashes
    tiles_visited: int = 0
    tiles_total: int = 0
    off_track_events: int = 0  # times the car went from touching the road to all four wheels on grass
    wheel_travel: float = 0.0  # radians the front wheels turned, summed over steps: lower is smoother
    lap_finished: bool = False
    left_playfield: bool = False
    crashes: int = 0  # contacts with traffic cars that began (each costs TrafficSettings.crash_penalty)

    @property
    def tile_share(self) -> float:
        return self.tiles_visited / self.tiles_total if self.tiles_total else 0.0

    @property
    def seconds(self) -> float:
        return self.steps * STEP_SECONDS

    @property
    def steer_rate(self) -> float:
        """Mean front-wheel angular speed, rad/s: a smoothness measure comparable across runs."""
        return self.wheel_travel / self.seconds if self.steps else 0.0


def summarize(stats: list[TrackStats]) -> dict[str, float]:
    """Mean (and spread) over tracks: results per track are bimodal, so report min and max too."""
    if not stats:
        return {}
    reward = np.array([s.reward for s in stats])
    share = np.array([s.tile_share for s in stats])
    return {"tracks": len(stats), "reward": float(reward.mean()), "reward_min": float(reward.min()),
            "reward_max": float(reward.max()), "tile_share": float(share.mean()),
            "tile_share_min": float(share.min()), "tile_share_max": float(share.max()),
            "off_track_events": float(np.mean([s.off_track_events for s in stats])),
            "steer_rate": float(np.mean([s.steer_rate for s in stats])),
            "crashes": float(np.mean([s.crashes for s in stats])),
            "laps_finished": int(sum(s.lap_finished for s in stats))}


@dataclass
class CarState:
    x: float
    y: float
    heading: float  # radians, direction the car's nose points (world frame)
    speed: float  # world units per second, any direction
    forward_speed: float  # along the heading; negative when rolling backwards
    wheel_angle: float  # front wheels relative to the hull, radians, positive = left
    yaw_rate: float  # radians per second, positive = turning left


def check_hold(hold: dict[str, float]) -> dict[str, float]:
    """A complete plan for w, a, s, d; ValueError on unknown keys or negative / NaN durations."""
    unknown = set(hold) - set(KEYS)
    if unknown:
        raise ValueError(f"unknown keys in hold plan: {sorted(unknown)}")
    plan = {k: float(hold.get(k, 0.0)) for k in KEYS}
    bad = [k for k, v in plan.items() if not v >= 0]
    if bad:
        raise ValueError(f"hold durations must be >= 0 seconds, got {[(k, plan[k]) for k in bad]}")
    return plan


def plan_actions(hold: dict[str, float], start: float, steps: int, brake_strength: float = 0.8) -> np.ndarray:
    """Continuous actions (steps, 3) = [steer, gas, brake] for the physics steps that begin `start` seconds
    into a hold plan: each key counts for the share of its step it is down (steer: d positive, a negative)."""
    plan = check_hold(hold)
    begins = start + STEP_SECONDS * np.arange(steps)
    share = {k: np.clip((plan[k] - begins) / STEP_SECONDS, 0.0, 1.0) for k in KEYS}
    return np.stack([share["d"] - share["a"], share["w"], brake_strength * share["s"]], axis=1)


class CarRacingGame:
    """CarRacing-v3 as a game: reset(seed) → frame(); press(hold) and advance(seconds) move the physics.

    The plan last pressed keeps running until the next press, like keys held on a keyboard.
    """

    def __init__(self, settings: GameSettings | None = None):
        self.settings = settings or GameSettings()
        if self.settings.max_steps < 1:
            raise UserError(f"--max-steps {self.settings.max_steps}: must be at least 1")
        self.profile = load_profile(self.settings.profile)
        self.view, self.traffic_cars = hood.game_view(self.profile, self.settings.traffic)
        self.traffic = hood.no_traffic()
        self.env = gym.make("CarRacing-v3", render_mode="rgb_array", continuous=True,
                            domain_randomize=False).unwrapped
        cull_road(self.env)
        self.hold = check_hold({})
        self.plan_time = 0.0  # seconds since the current plan was pressed
        self.owed = 0.0  # game time asked for but not yet stepped (less than half a step)
        self.stats = TrackStats()
        self.terminated = self.truncated = False
        self._on_track = True

    # ---- track and car, for the scripted expert and the scores

    @property
    def track_xy(self) -> np.ndarray:
        """(N, 2) centre-line points; tile i spans points i-1 .. i, the car drives toward higher i."""
        return np.array([(x, y) for _, _, x, y in self.env.track], dtype=np.float64)

    def car_state(self) -> CarState:
        car = self.env.car
        heading = car.hull.angle + math.pi / 2
        vx, vy = car.hull.linearVelocity
        return CarState(x=float(car.hull.position[0]), y=float(car.hull.position[1]), heading=heading,
                        speed=math.hypot(vx, vy), forward_speed=vx * math.cos(heading) + vy * math.sin(heading),
                        wheel_angle=float(car.wheels[0].joint.angle), yaw_rate=float(car.hull.angularVelocity))

    @property
    def on_track(self) -> bool:
        """At least one wheel touches a road tile (the env's own friction test: no tile = grass)."""
        return any(wheel.tiles for wheel in self.env.car.wheels)

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated

    # ---- the game's two faces

    def reset(self, seed: int) -> np.ndarray:
        self.env.reset(seed=int(seed))
        self.hold = check_hold({})
        self.plan_time = self.owed = 0.0
        self.terminated = self.truncated = False
        self.stats = TrackStats(seed=int(seed), tiles_total=len(self.env.track))
        self.traffic = hood.track_traffic(self.env, int(seed), self.traffic_cars, self.view)
        self._sync_tiles()
        self._on_track = self.on_track
        return self.frame()

    def screen(self) -> np.ndarray:
        """The full render at the profile's capture size (top-down: 600x400, HUD strip included), for videos."""
        if self.view is not None:
            return hood.render(self.view, self.env.car, self.traffic, self.profile.capture_size)
        return self.env.render()

    def frame(self) -> np.ndarray:
        """The render at the profile's stored frame size, uint8 RGB (H, W, 3)."""
        if self.view is not None:
            return hood.render(self.view, self.env.car, self.traffic, self.profile.frame_size)
        return to_frame_size(self.screen(), self.profile.frame_size)

    def press(self, hold: dict[str, float]) -> None:
        """Start a new hold plan now (its clock starts at 0)."""
        self.hold = check_hold(hold)
        self.plan_time = 0.0

    def advance(self, seconds: float, hold: dict[str, float] | None = None) -> int:
        """Run the physics for `seconds` of game time (a new plan first, if given); returns steps run.

        round(seconds * 50) steps, with the rounding remainder carried to the next call so that many
        short advances add up to the right game time. Stops early when the run is over.
        """
        if not seconds >= 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        if hold is not None:
            self.press(hold)
        self.owed += seconds
        steps = round(self.owed / STEP_SECONDS)
        self.owed -= steps * STEP_SECONDS
        actions = plan_actions(self.hold, self.plan_time, steps, self.settings.brake_strength)
        ran = 0
        for action in actions:
            if self.done:
                break
            self._physics_step(action)
            self.plan_time += STEP_SECONDS
            ran += 1
        return ran

    def place_car(self, x: float, y: float, heading: float) -> None:
        """Put a fresh car (at rest, wheels straight) at a pose: how stuck starts are staged."""
        env = self.env
        env.car.destroy()
        env.car = Car(env.world, heading - math.pi / 2, x, y)
        env.world.Step(STEP_SECONDS, 6 * 30, 2 * 30)  # settle contacts so on_track is true at once
        self._on_track = self.on_track

    def close(self) -> None:
        self.env.close()

    # ---- internals

    def _physics_step(self, action: np.ndarray) -> None:
        """CarRacing.step without its 96x96 render; rewards and endings as the env computes them."""
        env, car = self.env, self.env.car
        before = car.wheels[0].joint.angle
        car.steer(-action[0])
        car.gas(action[1])
        car.brake(action[2])
        car.step(STEP_SECONDS)
        env.world.Step(STEP_SECONDS, 6 * 30, 2 * 30)
        env.t += STEP_SECONDS
        env.reward -= 0.1
        car.fuel_spent = 0.0
        step_reward = env.reward - env.prev_reward
        env.prev_reward = env.reward
        stats = self.stats
        if env.tile_visited_count == len(env.track) or env.new_lap:
            self.terminated = stats.lap_finished = True
        x, y = car.hull.position
        if abs(x) > PLAYFIELD or abs(y) > PLAYFIELD:
            self.terminated = stats.left_playfield = True
            step_reward = -100
        stats.steps += 1
        stats.reward += step_reward
        stats.wheel_travel += abs(car.wheels[0].joint.angle - before)
        crashes = hood.step_traffic(self.traffic, car, STEP_SECONDS)
        stats.crashes += crashes
        stats.reward -= crashes * self.traffic.settings.crash_penalty
        self._sync_tiles()
        on = self.on_track
        stats.off_track_events += self._on_track and not on
        self._on_track = on
        if stats.steps >= self.settings.max_steps and not self.terminated:
            self.truncated = True

    def _sync_tiles(self) -> None:
        self.stats.tiles_visited = int(self.env.tile_visited_count)


MAX_LATENCY_S = 5.0  # a longer thinking time is no driving: the car goes blind for seconds


def check_latency(latency: float | None) -> None:
    """A fixed thinking time is above 0 and at most MAX_LATENCY_S; None means measured wall time."""
    if latency is not None:
        require(0 < latency <= MAX_LATENCY_S, "--latency", latency,
                f"> 0 and at most {MAX_LATENCY_S:g} seconds (or leave it out to use the measured time)")


class RealTimeGame:
    """The game as a live loop sees it: it keeps running while the model thinks.

    capture() returns a frame; send(hold) first lets the game run under the old plan for the time
    since that capture (measured wall time, or a fixed `latency` for reproducible runs), then presses
    the new plan. So the model always acts on a frame that is one thinking time old, as in GTA V.
    """

    def __init__(self, game: CarRacingGame, latency: float | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        check_latency(latency)
        self.game, self.latency, self.clock = game, latency, clock
        self._last = None

    def capture(self) -> np.ndarray:
        now = self.clock()
        if self._last is not None and self.latency is None:
            self.game.advance(now - self._last)  # the moment between sending keys and capturing
        self._last = now
        return self.game.frame()

    def send(self, hold: dict[str, float]) -> float:
        """Press a plan; returns the game time that passed since the last capture."""
        now = self.clock()
        thought = self.latency if self.latency is not None else now - (self._last if self._last is not None else now)
        self.game.advance(thought)
        self.game.press(hold)
        self._last = now
        return thought
