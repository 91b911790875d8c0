"""CarRacing's world seen from a camera on the (invisible) car's hood, as the seed recorded GTA V.

Sky, a hazy horizon, the ground (CarRacing's grass patches, per pixel, so their motion shows the
speed only over several frames), the road tiles and kerbs as polygons in perspective drawn far to
near, traffic cars as boxes, and a GTA-style minimap in the profile's HUD rectangle. No speedometer.

Camera model: a pinhole at `height` above the road, `ahead` of the car's centre, looking level along
the car's heading. A point `d` ahead, `l` to the right and `up` above the camera lands at
u = cx + f l / d, v = cy - f up / d, with f from the horizontal field of view, cx the middle column
and cy the horizon row (a shifted principal point: the horizon sits above the middle as in GTA V).
Pixel centres are at whole coordinates. Frames are drawn `supersample` times larger and averaged
down, which anti-aliases the polygon edges and the distant grass.
"""
import math
from dataclasses import dataclass

import cv2
import numpy as np
from gymnasium.envs.box2d.car_racing import GRASS_DIM, PLAYFIELD, TRACK_WIDTH

from drive.carracing.traffic import CAR_HALF_LENGTH, CAR_HALF_WIDTH

SKY_TOP, SKY_HORIZON, HAZE = np.array((60, 115, 200)), np.array((190, 212, 235)), np.array((165, 190, 195))
GLASS = np.array((45, 55, 70))
SHIFT = 4  # fixed-point bits of cv2.fillPoly coordinates
MAP_GRASS, MAP_ROAD, MAP_ROUTE, MAP_TRAFFIC, MAP_PLAYER = (52, 68, 52), (150, 150, 150), (176, 80, 230), (255, 60, 30), (255, 255, 255)


@dataclass(frozen=True)
class HoodCamera:
    # CarRacing's car is 5 units long but drives up to 100 units/s, so the road 10-80 units ahead matters:
    # the eye sits higher than a real hood (3 units up) so that stretch gets rows of its own
    height: float = 3.0  # world units above the road
    ahead: float = 1.2  # of the car's centre, at the windscreen's foot
    fov_deg: float = 70.0  # horizontal
    horizon: float = 0.36  # the horizon's row as a share of the frame height
    near: float = 0.2  # nothing closer than this is drawn
    haze_from: float = 40.0  # distance where the haze begins ...
    far: float = 200.0  # ... and hides everything
    supersample: int = 2


@dataclass(frozen=True)
class MinimapSettings:
    span: float = 120.0  # world units from the minimap's top edge to its bottom edge
    player_at: float = 0.68  # the player's arrow, as a share of the minimap's height from its top
    route_ahead: float = 160.0  # world units of the route drawn ahead of the car


class Projection:
    """The camera at one frame size: world points to camera coordinates to pixels."""

    def __init__(self, camera: HoodCamera, size: tuple[int, int]):
        w, h = size
        self.camera, self.size = camera, size
        self.f = (w / 2) / math.tan(math.radians(camera.fov_deg) / 2)
        self.cx = (w - 1) / 2
        self.cy = camera.horizon * h - 0.5
        self.tan_half = (w / 2 + 1) / self.f  # a pixel of margin beyond the frame's side edges
        self.first_ground_row = max(0, math.floor(self.cy) + 1)
        # distance ahead and to the right of the ground seen at each pixel from that row down (float32)
        d = np.minimum(self.row_distance(np.arange(self.first_ground_row, h, dtype=np.float64)), 4 * camera.far)
        self.ground_ahead = np.repeat(d[:, None], w, axis=1).astype(np.float32)
        self.ground_across = (d[:, None] * (np.arange(w) - self.cx) / self.f).astype(np.float32)

    def camera_pose(self, x: float, y: float, heading: float) -> tuple[float, float, float]:
        """The camera's ground position and heading for a car at (x, y, heading)."""
        return x + self.camera.ahead * math.cos(heading), y + self.camera.ahead * math.sin(heading), heading

    def to_camera(self, xy: np.ndarray, z, pose: tuple[float, float, float]) -> np.ndarray:
        """(..., 3) distance ahead d, right l, up (relative to the camera) of world points (..., 2) at height z."""
        x, y, heading = pose
        c, s = math.cos(heading), math.sin(heading)
        rx, ry = xy[..., 0] - x, xy[..., 1] - y
        up = np.broadcast_to(np.asarray(z, dtype=np.float64) - self.camera.height, rx.shape)
        return np.stack([rx * c + ry * s, rx * s - ry * c, up], axis=-1)

    def project(self, cam: np.ndarray) -> np.ndarray:
        """(..., 2) pixel u, v of camera points (..., 3) with d > 0."""
        d = cam[..., 0]
        return np.stack([self.cx + self.f * cam[..., 1] / d, self.cy - self.f * cam[..., 2] / d], axis=-1)

    def row_distance(self, rows: np.ndarray) -> np.ndarray:
        """Ground distance seen at each pixel row below the horizon."""
        return self.f * self.camera.height / (rows - self.cy)


def clip_near(poly: np.ndarray, near: float) -> np.ndarray:
    """The part of a polygon (k, 3) in camera coordinates with d >= near (Sutherland-Hodgman, one plane)."""
    out = []
    for i in range(len(poly)):
        a, b = poly[i - 1], poly[i]
        a_in, b_in = a[0] >= near, b[0] >= near
        if a_in != b_in:
            out.append(a + (b - a) * (near - a[0]) / (b[0] - a[0]))
        if b_in:
            out.append(b)
    return np.array(out).reshape(-1, 3)


def fixed_point(uv: np.ndarray) -> np.ndarray:
    """Pixel coordinates as cv2's int32 fixed point (SHIFT fractional bits), kept inside its range."""
    return np.clip(np.round(uv * (1 << SHIFT)), -(1 << 28), 1 << 28).astype(np.int32)


class HoodView:
    """Renders frames of one track: call reset(env) per track, then render(...) per frame."""

    def __init__(self, frame_size: tuple[int, int], minimap_rect, camera: HoodCamera | None = None,
                 minimap: MinimapSettings | None = None):
        self.frame_size, self.rect = frame_size, minimap_rect
        self.camera, self.minimap = camera or HoodCamera(), minimap or MinimapSettings()
        self._projections: dict[tuple[int, int], Projection] = {}

    def reset(self, env) -> None:
        """Take the track's road polygons (tiles and kerbs), centre line and colours from CarRacing's env."""
        self.quads = np.array([poly for poly, _ in env.road_poly], dtype=np.float64)  # (N, 4, 2)
        self.colors = [tuple(int(c) for c in color) for _, color in env.road_poly]
        self.centres = self.quads.mean(axis=1)
        self.track = np.array([(x, y) for _, _, x, y in env.track], dtype=np.float64)
        seg = np.diff(np.vstack([self.track, self.track[:1]]), axis=0)
        self.spacing = float(np.mean(np.hypot(seg[:, 0], seg[:, 1])))
        self.bg = np.asarray(env.bg_color, np.float64)
        # CarRacing's grass patches as a texture of one pixel per GRASS_DIM cell (a cell of margin around
        # the field): patches on every other row and column, as its _render_road draws them
        cells = round(2 * PLAYFIELD / GRASS_DIM)
        patch = np.zeros((cells + 2, cells + 2), bool)
        patch[1:-1:2, 1:-1:2] = True
        self.ground = np.where(patch.T[..., None], env.grass_color, env.bg_color).astype(np.uint8)  # [row y, col x]

    def projection(self, size: tuple[int, int]) -> Projection:
        if size not in self._projections:
            self._projections[size] = Projection(self.camera, size)
        return self._projections[size]

    def render(self, car: tuple[float, float, float], traffic: list[tuple[tuple[float, float, float], tuple]],
               size: tuple[int, int] | None = None) -> np.ndarray:
        """The (H, W, 3) uint8 RGB view from the car at (x, y, heading); traffic: [(pose, rgb), ...]."""
        w, h = size or self.frame_size
        ss = self.camera.supersample if (w, h) == self.frame_size else 1  # larger sizes (videos) need none
        proj = self.projection((w * ss, h * ss))
        pose = proj.camera_pose(*car)
        image = self._sky_and_ground(proj, pose)
        self._road(image, proj, pose)
        self._haze(image, proj)
        for car_pose, color in sorted(traffic, key=lambda t: -math.hypot(t[0][0] - pose[0], t[0][1] - pose[1])):
            self._car(image, proj, pose, car_pose, color)
        scale = (w * ss) / self.frame_size[0]
        self._minimap(image, car, traffic, scale)
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA) if ss > 1 else image

    # ---- the scene

    def _sky_and_ground(self, proj: Projection, pose) -> np.ndarray:
        w, h = proj.size
        image = np.empty((h, w, 3), np.uint8)
        first = proj.first_ground_row
        t = (np.arange(first) / max(first - 1, 1))[:, None]
        image[:first] = (SKY_TOP * (1 - t) + SKY_HORIZON * t).astype(np.uint8)[:, None, :]
        ahead, across = proj.ground_ahead, proj.ground_across
        x, y, heading = pose
        c, s = math.cos(heading), math.sin(heading)
        # ground point of each pixel in grass cells from the texture's corner (pixel j spans j - 0.5 .. j + 0.5)
        gx = (ahead * c + across * s + (x + PLAYFIELD + GRASS_DIM)) * (1 / GRASS_DIM) - 0.5
        gy = (ahead * s - across * c + (y + PLAYFIELD + GRASS_DIM)) * (1 / GRASS_DIM) - 0.5
        image[first:] = cv2.remap(self.ground, gx, gy, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=tuple(int(v) for v in self.bg))
        return image

    def _road(self, image: np.ndarray, proj: Projection, pose) -> None:
        cam = self.camera
        rel = self.centres - pose[:2]
        near = np.hypot(rel[:, 0], rel[:, 1]) < cam.far + 20
        idx = np.flatnonzero(near)
        pts = proj.to_camera(self.quads[idx], 0.0, pose)  # (n, 4, 3)
        d, l = pts[..., 0], pts[..., 1]
        keep = ((d >= cam.near).any(axis=1) & ~(l > d * proj.tan_half).all(axis=1)
                & ~(-l > d * proj.tan_half).all(axis=1))
        order = np.flatnonzero(keep)[np.argsort(-d.mean(axis=1)[keep])]  # far to near
        whole = d[order].min(axis=1) >= cam.near
        uv = fixed_point(proj.project(np.where(whole[:, None, None], pts[order], 1.0)))
        for k, i in enumerate(order):
            if whole[k]:
                cv2.fillPoly(image, [uv[k]], self.colors[idx[i]], cv2.LINE_8, SHIFT)
            else:
                self._fill(image, proj, pts[i], self.colors[idx[i]])

    def _fill(self, image: np.ndarray, proj: Projection, poly: np.ndarray, color) -> None:
        if poly[:, 0].min() < self.camera.near:
            poly = clip_near(poly, self.camera.near)
            if len(poly) < 3:
                return
        cv2.fillPoly(image, [fixed_point(proj.project(poly))], tuple(int(c) for c in color), cv2.LINE_8, SHIFT)

    def _haze(self, image: np.ndarray, proj: Projection) -> None:
        cam = self.camera
        first = proj.first_ground_row
        d = proj.row_distance(np.arange(first, proj.size[1], dtype=np.float64))
        alpha = np.clip((d - cam.haze_from) / (cam.far - cam.haze_from), 0.0, 1.0)[:, None, None]
        image[first:] = (image[first:] * (1 - alpha) + HAZE * alpha).astype(np.uint8)

    def _car(self, image: np.ndarray, proj: Projection, pose, car_pose, color) -> None:
        """A traffic car: a shadow, a body box and a cabin box; taillights when seen from behind."""
        cam = self.camera
        x, y, heading = car_pose
        distance = math.hypot(x - pose[0], y - pose[1])
        if distance > cam.far:
            return
        haze = min(max((distance - cam.haze_from) / (cam.far - cam.haze_from), 0.0), 1.0)
        color = np.asarray(color, np.float64)

        def tint(rgb, shade=1.0):
            return np.asarray(rgb, np.float64) * shade * (1 - haze) + HAZE * haze

        fwd = np.array([math.cos(heading), math.sin(heading)])
        right = np.array([math.sin(heading), -math.cos(heading)])
        centre = np.array([x, y])
        eye = np.array(pose[:2])
        ground = np.array([centre + a * (CAR_HALF_LENGTH + 0.2) * fwd + b * (CAR_HALF_WIDTH + 0.1) * right
                           for a, b in ((1, 1), (1, -1), (-1, -1), (-1, 1))])
        self._fill(image, proj, proj.to_camera(ground, 0.0, pose), tint((35, 35, 35)))
        body = (0.0, CAR_HALF_LENGTH, CAR_HALF_WIDTH, 0.3, 1.05, color)  # shift ahead, half length, half width, z0, z1
        cabin = (-0.4, 1.3, CAR_HALF_WIDTH - 0.15, 1.05, 1.6, GLASS)
        for shift, a, b, z0, z1, rgb in (body, cabin):  # the cabin sits on the body: never hidden by it
            c = centre + shift * fwd
            faces = {  # name -> (outward normal, the face's bottom edge from left to right as seen from outside)
                "front": (fwd, c + a * fwd + b * right, c + a * fwd - b * right),
                "back": (-fwd, c - a * fwd - b * right, c - a * fwd + b * right),
                "right": (right, c - a * fwd + b * right, c + a * fwd + b * right),
                "left": (-right, c + a * fwd - b * right, c - a * fwd - b * right),
            }
            for name, (normal, p, q) in faces.items():
                if np.dot(normal, eye - (p + q) / 2) <= 0:
                    continue  # faces away from the camera
                quad = proj.to_camera(np.array([p, q, q, p]), np.array([z0, z0, z1, z1]), pose)
                self._fill(image, proj, quad, tint(rgb, 0.85 if name in ("front", "back") else 0.7))
                if rgb is color and name in ("back", "front"):  # tail or head lamps
                    lamp = (230, 20, 20) if name == "back" else (250, 245, 200)
                    for side in (-1, 1):
                        e0, e1 = p + (q - p) * (0.5 + side * 0.3), p + (q - p) * (0.5 + side * 0.42)
                        lamp_quad = proj.to_camera(np.array([e0, e1, e1, e0]), np.array([0.7, 0.7, 0.92, 0.92]), pose)
                        self._fill(image, proj, lamp_quad, tint(lamp))
            if z1 < cam.height:  # a roof below the eye is seen from above
                top = np.array([c + a * fwd + b * right, c + a * fwd - b * right, c - a * fwd - b * right,
                                c - a * fwd + b * right])
                self._fill(image, proj, proj.to_camera(top, z1, pose), tint(color))

    # ---- the minimap

    def _minimap(self, image: np.ndarray, car, traffic, scale: float) -> None:
        r, m = self.rect, self.minimap
        x0, y0, x1, y1 = (round(v * scale) for v in (r.x0, r.y0, r.x1, r.y1))
        view = image[y0:y1, x0:x1]
        mw, mh = x1 - x0, y1 - y0
        k = mh / m.span  # pixels per world unit
        x, y, heading = car
        c, s = math.cos(heading), math.sin(heading)
        px, py = (mw - 1) / 2, m.player_at * (mh - 1)

        def to_map(xy: np.ndarray) -> np.ndarray:
            rx, ry = xy[..., 0] - x, xy[..., 1] - y
            u = px + k * (rx * s - ry * c)
            v = py - k * (rx * c + ry * s)
            return fixed_point(np.stack([u, v], -1))

        view[:] = MAP_GRASS
        road = max(1, round(2 * TRACK_WIDTH * k))
        cv2.polylines(view, [to_map(self.track)], True, MAP_ROAD, road, cv2.LINE_AA, SHIFT)
        i = int(np.argmin(np.hypot(self.track[:, 0] - x, self.track[:, 1] - y)))
        ahead = (i + np.arange(round(m.route_ahead / self.spacing) + 1)) % len(self.track)
        cv2.polylines(view, [to_map(self.track[ahead])], False, MAP_ROUTE, max(1, round(0.45 * road)), cv2.LINE_AA, SHIFT)
        dot = max(round(1.5 * scale), round(1.6 * CAR_HALF_WIDTH * k))
        for (tx, ty, _), _ in traffic:
            u, v = to_map(np.array([tx, ty]))
            cv2.circle(view, (int(u), int(v)), dot << SHIFT, MAP_TRAFFIC, -1, cv2.LINE_AA, SHIFT)
        size = max(2.5 * scale, 3.0 * CAR_HALF_WIDTH * k)
        arrow = np.array([[px, py - 1.3 * size], [px + size, py + size], [px, py + 0.4 * size], [px - size, py + size]])
        cv2.fillPoly(view, [fixed_point(arrow)], MAP_PLAYER, cv2.LINE_AA, SHIFT)
        cv2.rectangle(view, (0, 0), (mw - 1, mh - 1), (0, 0, 0), max(1, round(scale / 2)))
