"""Traffic for the embedded game: cars that drive the track's right lane slower than the expert.

Traffic cars are kinematic: each moves along the centre line at its own speed, offset into the right
lane, and never closes to less than `follow_gap` on the car ahead of it (so they queue, never pass
through each other). They are not box2d bodies: contact with the player's car is found by an overlap
test of the two rectangles. A contact that begins is a crash: counted, penalised in the reward and
felt as a jolt (the player's car loses most of its speed); the traffic car drives on.

The track seed places the traffic: the same seed gives the same cars at the same places and speeds.
No car starts within `clear_start` of the start line, so the player's standing start is never hit.
"""
import math
from dataclasses import dataclass

import numpy as np
from gymnasium.envs.box2d.car_racing import TRACK_WIDTH

from data.errors import UserError

CAR_HALF_LENGTH = 2.5  # CarRacing's car: hull from -2.4 to 2.6 along its axis, wheels out to +-1.24
CAR_HALF_WIDTH = 1.25
LANE_OFFSET = 0.55 * TRACK_WIDTH  # centre of a lane, from the centre line (the road is 2 * TRACK_WIDTH wide)

COLORS = ((200, 40, 40), (40, 80, 200), (230, 230, 230), (30, 30, 30), (240, 190, 30), (60, 150, 80), (150, 60, 160))


@dataclass(frozen=True)
class TrafficSettings:
    speed: tuple[float, float] = (20.0, 40.0)  # world units per second, drawn per car (the expert drives 50-100)
    clear_start: float = 80.0  # no traffic within this arc length of the start line, either side
    follow_gap: float = 12.0  # centre to centre, along the lane
    crash_penalty: float = 50.0  # subtracted from the reward per crash
    crash_keep: float = 0.3  # share of its speed the player's car keeps after a crash
    pass_offset: float = LANE_OFFSET  # the expert passes this far left of the centre line
    pass_lead_s: float = 1.5  # the expert is in the passing lane this many seconds before it reaches a car
    pass_clear: float = 8.0  # ... and stays there until the car is this far behind its rear


def seed_rng(track_seed: int) -> np.random.Generator:
    return np.random.default_rng([int(track_seed) & 0xFFFFFFFF, 18])  # apart from the env's own stream


class Traffic:
    """`cars` traffic cars on one track (centre line `track_xy`, driven toward higher index)."""

    def __init__(self, track_xy: np.ndarray, track_seed: int, cars: int, settings: TrafficSettings | None = None):
        self.settings = s = settings or TrafficSettings()
        self.track = np.asarray(track_xy, dtype=np.float64)
        seg = np.roll(self.track, -1, axis=0) - self.track
        self.seg_len = np.hypot(seg[:, 0], seg[:, 1])
        self.seg_heading = np.arctan2(seg[:, 1], seg[:, 0])
        self.arc = np.concatenate([[0.0], np.cumsum(self.seg_len)])  # arc[i]: arc length at point i
        self.length = float(self.arc[-1])
        rng = seed_rng(track_seed)
        free = self.length - 2 * s.clear_start
        slot = free / max(cars, 1)
        if cars and slot < s.follow_gap:
            raise UserError(f"--traffic {cars}: more cars than track {track_seed} holds "
                            f"({int(free // s.follow_gap)} fit on its {self.length:.0f} units)")
        # one car per slot of the free stretch, at a random place inside it
        self.s = s.clear_start + slot * (np.arange(cars) + rng.uniform(0.0, 1.0 - s.follow_gap / slot, cars))
        self.speed = rng.uniform(*s.speed, cars)
        self.colors = [COLORS[i] for i in rng.integers(len(COLORS), size=cars)]
        self.touching = np.zeros(cars, dtype=bool)

    def __len__(self) -> int:
        return len(self.s)

    def step(self, seconds: float) -> None:
        """Move every car on; a car closing on the one ahead stays `follow_gap` behind it."""
        if not len(self):
            return
        wanted = self.s + self.speed * seconds
        order = np.argsort(self.s)  # leading car last; the car ahead of the leader is the last one, a lap on
        moved = wanted.copy()
        for k in range(len(order) - 1, -1, -1):
            i = order[k]
            ahead = order[(k + 1) % len(order)]
            limit = moved[ahead] + (self.length if k == len(order) - 1 else 0.0) - self.settings.follow_gap
            if len(order) > 1:
                moved[i] = max(self.s[i], min(wanted[i], limit))
        self.s = np.mod(moved, self.length)

    def poses(self) -> np.ndarray:
        """(n, 3) x, y, heading of each car: on its lane, right of the centre line."""
        i = np.searchsorted(self.arc, self.s, side="right") - 1
        i = np.clip(i, 0, len(self.track) - 1)
        t = (self.s - self.arc[i]) / self.seg_len[i]
        n = len(self.track)
        xy = self.track[i] + t[:, None] * (self.track[(i + 1) % n] - self.track[i])
        # the heading turns smoothly from one segment's to the next around each centre-line point
        other = np.where(t < 0.5, (i - 1) % n, (i + 1) % n)
        turn = np.angle(np.exp(1j * (self.seg_heading[other] - self.seg_heading[i])))
        heading = self.seg_heading[i] + turn * np.abs(0.5 - t)
        right = np.stack([np.sin(heading), -np.cos(heading)], axis=1)
        return np.column_stack([xy + LANE_OFFSET * right, heading])

    def gaps(self, track_index: int) -> np.ndarray:
        """Arc length from centre-line point `track_index` to each car, in (-L/2, L/2]: > 0 is ahead."""
        gap = np.mod(self.s - self.arc[track_index] + self.length / 2, self.length) - self.length / 2
        return gap

    def pass_offset(self, track_index: int, forward_speed: float) -> float:
        """How far left of the centre line the expert should drive now: the passing lane while a slower
        car is ahead within `pass_lead_s` of closing (or beside it, until it is well behind), else 0."""
        s = self.settings
        if not len(self):
            return 0.0
        gap = self.gaps(track_index)
        closing = np.maximum(forward_speed - self.speed, 0.0)
        ahead = gap < 2 * CAR_HALF_LENGTH + 10.0 + s.pass_lead_s * closing
        behind = gap > -(2 * CAR_HALF_LENGTH + s.pass_clear)
        return s.pass_offset if bool(np.any(ahead & behind)) else 0.0

    def contacts(self, x: float, y: float, heading: float) -> int:
        """Crashes that begin now: cars the player's car (pose x, y, heading) touches and did not before."""
        if not len(self):
            return 0
        poses = self.poses()
        close = np.hypot(poses[:, 0] - x, poses[:, 1] - y) < 2 * math.hypot(CAR_HALF_LENGTH, CAR_HALF_WIDTH)
        now = np.array([bool(c) and boxes_overlap((x, y, heading), tuple(p)) for c, p in zip(close, poses)])
        new = int(np.sum(now & ~self.touching))
        self.touching = now
        return new


def corners(pose: tuple[float, float, float]) -> np.ndarray:
    """(4, 2) corners of a car's rectangle at (x, y, heading)."""
    x, y, h = pose
    fwd, right = np.array([math.cos(h), math.sin(h)]), np.array([math.sin(h), -math.cos(h)])
    return np.array([[x, y] + a * CAR_HALF_LENGTH * fwd + b * CAR_HALF_WIDTH * right
                     for a, b in ((1, 1), (1, -1), (-1, -1), (-1, 1))])


def boxes_overlap(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    """Separating-axis test of two car rectangles."""
    ca, cb = corners(a), corners(b)
    for heading in (a[2], b[2]):
        for axis in (np.array([math.cos(heading), math.sin(heading)]), np.array([-math.sin(heading), math.cos(heading)])):
            pa, pb = ca @ axis, cb @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True
