"""CarRacing's road drawn with the same pixels in less time.

Each frame, CarRacing-v3 turns every grass square (400) and road tile (~300-700) into screen coordinates in
Python, one polygon at a time, to draw the ~75 near the screen: ~5 ms of its ~12 ms render. Here one numpy
pass over all of them picks those that could be near the screen, and only they go through the env's own
drawing (its transform, its screen test, its gfxdraw calls), so the image is the env's to the pixel
(tests/test_road_culling.py compares whole renders). A polygon skipped here has every corner farther off
the screen than the env's own test allows, which would skip it too.
"""
import math
from types import MethodType

import numpy as np
from gymnasium.envs.box2d import car_racing as cr

MARGIN = cr.MAX_SHAPE_DIM + 1.0  # pixels beyond the window: the env's own test, and a pixel for rounding


def grass_squares() -> list[list[tuple[float, float]]]:
    """CarRacing's grass squares, in the env's order: a 20 x 20 grid of GRASS_DIM squares, every other one."""
    d = cr.GRASS_DIM
    return [[(d * x + d, d * y), (d * x, d * y), (d * x, d * y + d), (d * x + d, d * y + d)]
            for x in range(-20, 20, 2) for y in range(-20, 20, 2)]


def near_screen(corners: np.ndarray, zoom: float, translation, angle: float) -> np.ndarray:
    """(N, K, 2) world corners → bool (N,): some corner within MARGIN of the window once transformed."""
    cos, sin = math.cos(angle), math.sin(angle)
    x = (corners[..., 0] * cos - corners[..., 1] * sin) * zoom + translation[0]
    y = (corners[..., 0] * sin + corners[..., 1] * cos) * zoom + translation[1]
    inside = (x >= -MARGIN) & (x <= cr.WINDOW_W + MARGIN) & (y >= -MARGIN) & (y <= cr.WINDOW_H + MARGIN)
    return inside.any(axis=1)


def cull_road(env: cr.CarRacing) -> None:
    """Replace env's road drawing (background, grass, road tiles) by the culled one."""
    grass = grass_squares()
    grass_corners = np.array(grass, dtype=np.float64)
    road = {"polys": None, "corners": None}  # per track: road_poly is rebuilt by every reset

    def render_road(self, zoom, translation, angle):
        b = cr.PLAYFIELD
        self._draw_colored_polygon(self.surf, [(b, b), (b, -b), (-b, -b), (-b, b)], self.bg_color, zoom,
                                   translation, angle, clip=False)
        for i in np.flatnonzero(near_screen(grass_corners, zoom, translation, angle)):
            self._draw_colored_polygon(self.surf, grass[i], self.grass_color, zoom, translation, angle)
        if road["polys"] is not self.road_poly or len(road["corners"]) != len(self.road_poly):
            road["polys"] = self.road_poly
            road["corners"] = np.array([poly for poly, _ in self.road_poly], dtype=np.float64).reshape(-1, 4, 2)
        for i in np.flatnonzero(near_screen(road["corners"], zoom, translation, angle)):
            poly, color = self.road_poly[i]
            self._draw_colored_polygon(self.surf, [(p[0], p[1]) for p in poly], [int(c) for c in color], zoom,
                                       translation, angle)

    env._render_road = MethodType(render_road, env)
