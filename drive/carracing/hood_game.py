"""What the embedded game does differently when its profile asks for the hood view (data/profiles/
carracing_hood.toml, table [game]): frames from drive.carracing.hood_view, traffic from drive.carracing.traffic, crashes.

drive.carracing.CarRacingGame calls these few functions; with the top-down profile they do nothing.
"""
import math

import numpy as np

from data.errors import UserError
from data.profiles import GameProfile
from drive.carracing.hood_view import HoodView
from drive.carracing.traffic import Traffic, TrafficSettings

VIEWS = ("top-down", "hood")


def game_view(profile: GameProfile, traffic: int | None) -> tuple[HoodView | None, int]:
    """The hood renderer (None: the env's own top-down render) and the traffic cars per track."""
    view = profile.game.get("view", "top-down")
    if view not in VIEWS:
        raise UserError(f"{profile.source}: [game] view = {view!r}; choose one of {', '.join(VIEWS)}")
    cars = int(profile.game.get("traffic", 0)) if traffic is None else traffic
    if cars < 0:
        raise UserError(f"--traffic {cars}: must be >= 0 cars")
    if view == "top-down":
        if cars:
            raise UserError(f"--traffic {cars}: the {profile.name} profile's top-down view does not draw traffic; "
                            f"use the carracing_hood profile (--game carracing_hood) or --traffic 0")
        return None, 0
    if "minimap" not in profile.hud:
        raise UserError(f"{profile.source}: the hood view draws its minimap into [hud] minimap; add that rectangle")
    return HoodView(profile.frame_size, profile.hud["minimap"]), cars


def no_traffic() -> Traffic:
    return Traffic(np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]), 0, 0)


def track_traffic(env, track_seed: int, cars: int, view: HoodView | None,
                  settings: TrafficSettings | None = None) -> Traffic:
    """A freshly reset env's traffic (placed by the track seed); readies the view for its track."""
    if view is not None:
        view.reset(env)
    track = np.array([(x, y) for _, _, x, y in env.track], dtype=np.float64)
    return Traffic(track, track_seed, cars, settings)


def traffic_items(traffic: Traffic) -> list[tuple[tuple[float, float, float], tuple]]:
    """[(pose, rgb), ...] of the traffic cars, as HoodView.render takes them."""
    return list(zip(map(tuple, traffic.poses()), traffic.colors))


def render(view: HoodView, car, traffic: Traffic, size: tuple[int, int]) -> np.ndarray:
    hull = car.hull
    pose = (float(hull.position[0]), float(hull.position[1]), hull.angle + math.pi / 2)
    return view.render(pose, traffic_items(traffic), size)


def step_traffic(traffic: Traffic, car, seconds: float) -> int:
    """Move the traffic on; returns the crashes that began, after which the player's car keeps only
    `crash_keep` of its speed (hull and wheels alike, so the joints do not tear it apart)."""
    if not len(traffic):
        return 0
    traffic.step(seconds)
    hull = car.hull
    crashes = traffic.contacts(float(hull.position[0]), float(hull.position[1]), hull.angle + math.pi / 2)
    if crashes:
        keep = traffic.settings.crash_keep
        for body in [hull] + [w for w in car.wheels]:
            body.linearVelocity = (body.linearVelocity[0] * keep, body.linearVelocity[1] * keep)
            body.angularVelocity = body.angularVelocity * keep
        for wheel in car.wheels:
            wheel.omega *= keep
    return crashes
