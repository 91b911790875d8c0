"""A scripted expert for CarRacing: pure pursuit on the track's centre line plus speed control from the
curvature ahead, pressing binary keys like a person on a keyboard (short taps for small corrections).
With traffic it pursues a point in the left lane while it passes a slower car (drive.carracing.traffic).

It reads the true track and car state from the game, which the learned agent never sees.
"""
import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from drive.carracing.game import (MAX_WHEEL_ANGLE, STEP_SECONDS, WHEELBASE, CarRacingGame, CarState, GameSettings,
                             TrackStats)


@dataclass
class ExpertSettings:
    decision_seconds: float = 0.1  # how often the expert decides (the recording frame interval)
    lookahead: float = 10.0  # pure-pursuit look-ahead distance at rest, world units
    lookahead_per_speed: float = 0.25  # ... plus this many seconds of travel
    top_speed: float = 150.0  # world units per second (the car tops out near 100)
    corner_accel: float = 120.0  # sideways acceleration allowed in corners, units/s^2
    brake_accel: float = 80.0  # deceleration assumed when planning to slow down, units/s^2
    preview: float = 80.0  # how far ahead corners are looked for, world units
    tap: float = 0.01  # resolution of a key press, seconds
    recover_speed: float = 20.0  # speed limit while off the road or facing away from it
    recover_gas: float = 0.4  # share of the interval w is tapped while recovering (gas builds up slowly)
    slip_limit: float = 1.0  # rad/s of yaw the wheels do not explain before the gas is released


def wheel_angles(angle: float, direction: int, hold: float, steps: int) -> np.ndarray:
    """Front-wheel angle after each of `steps` physics steps when the steer key on `direction` (+1 left,
    -1 right, 0 none) is held for `hold` seconds: the wheels chase a target of ±(share of the step held)
    at up to 0.06 rad a step and chase 0 once released (CarRacing's steering motor)."""
    out = np.empty(steps)
    for i in range(steps):
        share = min(max((hold - i * STEP_SECONDS) / STEP_SECONDS, 0.0), 1.0)
        target = direction * share
        gap = target - angle
        angle += math.copysign(min(50.0 * abs(gap), 3.0), gap) * STEP_SECONDS
        angle = min(max(angle, -MAX_WHEEL_ANGLE), MAX_WHEEL_ANGLE)
        out[i] = angle
    return out


class Expert:
    """Decides a hold plan every `decision_seconds` from the track geometry. Call reset() per track."""

    def __init__(self, settings: ExpertSettings | None = None):
        self.settings = settings or ExpertSettings()
        self.track = np.zeros((0, 2))
        self.index = None

    def reset(self, game: CarRacingGame) -> None:
        self.track = game.track_xy
        seg = np.roll(self.track, -1, axis=0) - self.track
        self.spacing = float(np.mean(np.hypot(seg[:, 0], seg[:, 1])))
        heading = np.arctan2(seg[:, 1], seg[:, 0])
        self.left = np.stack([-np.sin(heading), np.cos(heading)], axis=1)  # unit normal, left of the direction
        turn = np.angle(np.exp(1j * (np.roll(heading, -1) - heading)))
        curvature = np.abs(turn) / self.spacing
        # smooth over a few points: the centre line turns in steps of one tile
        curvature = np.convolve(np.concatenate([curvature[-2:], curvature, curvature[:2]]), np.ones(5) / 5, "valid")
        self.corner_speed = np.minimum(self.settings.top_speed,
                                       np.sqrt(self.settings.corner_accel / np.maximum(curvature, 1e-6)))
        self.index = None

    def decide(self, game: CarRacingGame, latency: float = 0.0) -> dict[str, float]:
        """The hold plan for the next interval. With `latency` > 0 the plan starts only that long after
        the state it is decided on, while the plan in flight (game.hold) runs on: decide for the state
        predicted for then, as a driver who knows their own reaction time does."""
        s, car = self.settings, game.car_state()
        if latency > 0:
            car = self._predict(game, car, latency)
        interval = s.decision_seconds
        i = self._progress(car)
        n = len(self.track)

        look = s.lookahead + s.lookahead_per_speed * max(car.forward_speed, 0.0)
        j = (i + max(1, round(look / self.spacing))) % n
        tx, ty = self.track[j] + game.traffic.pass_offset(i, car.forward_speed) * self.left[j]  # overtake on the left
        dx, dy = tx - car.x, ty - car.y
        alpha = math.atan2(dy, dx) - car.heading
        alpha = math.atan2(math.sin(alpha), math.cos(alpha))
        if abs(alpha) > math.pi / 2:
            want = math.copysign(MAX_WHEEL_ANGLE, alpha)  # target behind: pure pursuit's sin(alpha) would fade
        else:
            want = math.atan2(2.0 * WHEELBASE * math.sin(alpha), max(math.hypot(dx, dy), 1e-3))
            want = min(max(want, -MAX_WHEEL_ANGLE), MAX_WHEEL_ANGLE)

        target_speed = self._target_speed(i)
        recovering = abs(alpha) > math.pi / 3 or not game.on_track
        if recovering:
            target_speed = min(target_speed, s.recover_speed)

        hold = {"w": 0.0, "a": 0.0, "s": 0.0, "d": 0.0}
        direction, seconds = self._steer(car.wheel_angle, want, interval)
        if seconds > 0:
            hold["a" if direction > 0 else "d"] = seconds
        gap = target_speed - car.forward_speed
        # rear-wheel drive: gas while the tail slides out (yaw faster than the wheels explain) spins the car
        slip = car.yaw_rate - car.forward_speed * math.tan(car.wheel_angle) / WHEELBASE
        if gap > 0 and abs(slip) < s.slip_limit:
            share = s.recover_gas if recovering else (1.0 if abs(car.wheel_angle) < 0.25 else 0.5)
            hold["w"] = self._quantize(min(1.0, gap / 5.0) * share * interval, interval)
        elif gap < -5.0:
            hold["s"] = self._quantize(min(1.0, -gap / 20.0) * interval, interval)
        return hold

    def _predict(self, game: CarRacingGame, car: CarState, seconds: float) -> CarState:
        """Where the car will be after `seconds` more of the plan in flight (a kinematic bicycle model
        on top of the measured slide)."""
        plan = game.hold
        direction, hold = (1, plan["a"]) if plan["a"] > 0 else (-1, plan["d"]) if plan["d"] > 0 else (0, 0.0)
        x, y, heading, v = car.x, car.y, car.heading, car.forward_speed
        steps = max(1, round(seconds / STEP_SECONDS))
        angles = wheel_angles(car.wheel_angle, direction, hold - game.plan_time, steps)
        slide = car.yaw_rate - v * math.tan(car.wheel_angle) / WHEELBASE
        for angle in angles:
            heading += (v * math.tan(angle) / WHEELBASE + slide) * STEP_SECONDS
            x += v * math.cos(heading) * STEP_SECONDS
            y += v * math.sin(heading) * STEP_SECONDS
        return dataclasses.replace(car, x=x, y=y, heading=heading, wheel_angle=float(angles[-1]))

    def facing_track(self, game: CarRacingGame, tolerance: float = math.radians(30)) -> bool:
        """Is the car heading along the road near it, within `tolerance` radians?"""
        car = game.car_state()
        i = self._progress(car)
        ahead = self.track[(i + 1) % len(self.track)] - self.track[i]
        error = math.atan2(ahead[1], ahead[0]) - car.heading
        return abs(math.atan2(math.sin(error), math.cos(error))) < tolerance

    def offset(self, game: CarRacingGame) -> float:
        """Distance from the car to the centre line (the expert's racing line) near its progress, world units."""
        car = game.car_state()
        i, n = self._progress(car), len(self.track)
        p = np.array([car.x, car.y])
        best = math.inf
        for a, b in ((self.track[(i - 1) % n], self.track[i]), (self.track[i], self.track[(i + 1) % n])):
            ab = b - a
            u = min(max(float(np.dot(p - a, ab) / max(np.dot(ab, ab), 1e-12)), 0.0), 1.0)
            best = min(best, float(np.hypot(*(p - a - u * ab))))
        return best

    def _progress(self, car: CarState) -> int:
        """Index of the nearest centre-line point, searched near the last one so crossings don't confuse it."""
        n = len(self.track)
        if self.index is None:
            candidates = np.arange(n)
        else:
            candidates = np.arange(self.index - 5, self.index + 40) % n
        d = np.hypot(self.track[candidates, 0] - car.x, self.track[candidates, 1] - car.y)
        self.index = int(candidates[int(np.argmin(d))])
        return self.index

    def _target_speed(self, i: int) -> float:
        """The fastest speed from which every corner in the preview can still be braked for."""
        s = self.settings
        ahead = np.arange(0, max(1, round(s.preview / self.spacing)))
        limits = self.corner_speed[(i + ahead) % len(self.track)]
        return float(np.min(np.sqrt(limits ** 2 + 2.0 * s.brake_accel * ahead * self.spacing)))

    def _steer(self, angle: float, want: float, interval: float) -> tuple[int, float]:
        """Which steer key and how long to hold it so the wheels stay closest to `want` over the interval."""
        s = self.settings
        steps = max(1, round(interval / STEP_SECONDS))
        best, best_err = (0, 0.0), np.inf
        for direction in (1, -1):
            for k in range(0, round(interval / s.tap) + 1):
                hold = k * s.tap
                err = float(np.mean((wheel_angles(angle, direction, hold, steps) - want) ** 2))
                if err < best_err - 1e-12:
                    best, best_err = (direction, hold), err
        return best

    def _quantize(self, seconds: float, interval: float) -> float:
        tap = self.settings.tap
        seconds = round(seconds / tap) * tap
        return math.inf if seconds >= interval else seconds


def drive_expert(game: CarRacingGame, seed: int, settings: ExpertSettings | None = None,
                 latency: float = 0.0) -> TrackStats:
    """One expert run on one track (no frames rendered) until the lap ends or the step limit.

    latency > 0 scores it the way the agent is driven with a fixed --latency: each plan starts that
    long after the state it was decided on and lasts until the next one (the expert predicts ahead).
    """
    settings = settings or ExpertSettings()
    if latency > 0:
        settings = dataclasses.replace(settings, decision_seconds=latency)
    expert = Expert(settings)
    game.reset(seed)
    expert.reset(game)
    while not game.done:
        hold = expert.decide(game, latency)
        game.advance(latency)  # no-op without latency
        game.advance(settings.decision_seconds - latency, hold)
    return game.stats


def score_expert(seeds, game_settings: GameSettings | None = None, settings: ExpertSettings | None = None,
                 latency: float = 0.0) -> list[TrackStats]:
    """The expert's TrackStats on each track seed (the same table the agent is scored in)."""
    game = CarRacingGame(game_settings)
    try:
        return [drive_expert(game, seed, settings, latency) for seed in seeds]
    finally:
        game.close()
