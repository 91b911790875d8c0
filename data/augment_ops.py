"""The augmentation ops, one class each, in one registry (OPS). data/augment.py runs them.

An op is everything about one transform: its fields are `p` and the [low, high] ranges of its numbers
(LIMITS bounds what a profile may ask for), `draw` turns them into one block's value, and its stage's
method changes the pixels with that value, `keys` the labels. A new op is a class here, decorated with
@register, and its test; profiles name it by NAME in their [augment] tables.

Stages, run in this order (labels in the same order as pixels):
  resample  one remap of the whole frame, shared by every resample op that fired (`magnification` about the
            frame centre, then `displace` of the source coordinates); the HUD is inpainted before it
  mirror    a left-right mirror of the frame; the HUD is mirrored in place
  pixels    any change of the frame's pixels, one op after the other in registry order
data/augment.py keeps the HUD rectangles (the minimap) as recorded whatever the ops do.

Registry order is the order the ops draw their numbers in and are written in the cache's spec text:
append new ops at the end, or the draws (and cached features) of every existing variant change.
"""
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from data.labels import A, D, S

Range = tuple[float, float]
STAGES = ("resample", "mirror", "pixels")
OPS: dict[str, type["Op"]] = {}  # name -> op class, in registry order


def register(cls: type["Op"]) -> type["Op"]:
    if cls.STAGE not in STAGES:
        raise ValueError(f"op {cls.NAME}: stage must be one of {STAGES}, not {cls.STAGE!r}")
    OPS[cls.NAME] = cls
    return cls


@dataclass(frozen=True)
class Op:
    """The base of every op: p, the chance it fires in a block, and what an op that changes nothing does."""
    p: float = 1.0
    NAME: ClassVar[str]
    STAGE: ClassVar[str] = "pixels"
    LIMITS: ClassVar[dict[str, Range]] = {}  # field -> the widest [low, high] a profile may give
    IDENTITY: ClassVar[Any] = None  # the value that changes nothing (what draw gives when the op does not fire)

    def draw(self, rng: np.random.Generator) -> Any:
        """One block's value: a number, bool or frozen dataclass, IDENTITY when the op does not fire. Draws
        every number whether the op fires or not, so one op's p does not move the numbers of the ops after it."""
        raise NotImplementedError

    def fires(self, rng: np.random.Generator) -> bool:
        return bool(rng.random() < self.p)

    def selects(self, frame_keys: np.ndarray) -> np.ndarray:
        """Which frames the op changes, by their recorded keys (..., 4) -> (...) bool: every frame."""
        return np.ones(np.shape(frame_keys)[:-1], dtype=bool)

    def keys(self, keys: np.ndarray, value, selected: np.ndarray) -> np.ndarray:
        """The labels (..., 4) uint8 after the op, where `selected`; `keys` may be changed in place."""
        return keys

    # stage resample
    def magnification(self, value) -> float:
        """Zoom about the frame centre (> 1 enlarges)."""
        return 1.0

    def displace(self, value, sx: np.ndarray, sy: np.ndarray, h: int, w: int) -> None:
        """Moves the source coordinates (sx, sy) of each output pixel, in place, after the zoom."""

    # stages mirror and pixels
    def pixels(self, frames: np.ndarray, value) -> np.ndarray:
        """Frames (N, H, W, 3) uint8 RGB after the op; `frames` is the pipeline's own copy, free to change."""
        return frames


def uniform(rng: np.random.Generator, r: Range, size=None):
    return rng.uniform(r[0], r[1], size)


@register
@dataclass(frozen=True)
class FlipOp(Op):
    """Left-right mirror: a and d swap."""
    NAME: ClassVar[str] = "flip"
    STAGE: ClassVar[str] = "mirror"
    IDENTITY: ClassVar[Any] = False

    def draw(self, rng):
        return self.fires(rng)

    def keys(self, keys, value, selected):
        keys[..., [A, D]] = keys[..., [D, A]]
        return keys

    def pixels(self, frames, value):
        return cv2.flip(frames.reshape(-1, frames.shape[2], 3), 1).reshape(frames.shape)  # numpy's is 4x slower


def warp_rows(keys: np.ndarray) -> np.ndarray:
    """Frames a warp may change: w alone or no key (a, s, d all up)."""
    keys = np.asarray(keys)
    return (keys[..., A] == 0) & (keys[..., S] == 0) & (keys[..., D] == 0)


@register
@dataclass(frozen=True)
class WarpOp(Op):
    """Rows shifted progressively: the bottom row moves shift/2 one way, the top row shift/2 the other,
    then a zoom of 1 + shift hides the borders (the seed: 50..100 px of 240). Only frames whose keys are w
    alone or nothing are warped, and they get the corrective steer (content shifted left at the bottom
    -> a, right -> d), as the seed did after comma.ai's lateral-planning idea. Value: the bottom row's
    shift against the top row's, a fraction of the width; < 0: bottom content moves left (steer a)."""
    shift: Range = (0.2, 0.42)  # fraction of the frame width
    NAME: ClassVar[str] = "warp"
    STAGE: ClassVar[str] = "resample"
    LIMITS: ClassVar[dict] = {"shift": (0.0, 0.5)}
    IDENTITY: ClassVar[Any] = 0.0

    def draw(self, rng):
        on, shift, left = self.fires(rng), uniform(rng, self.shift), rng.random() < 0.5
        return float(-shift if left else shift) if on else 0.0

    def selects(self, frame_keys):
        return warp_rows(frame_keys)

    def keys(self, keys, value, selected):
        keys[..., A if value < 0 else D] |= np.asarray(selected, dtype=np.uint8)
        return keys

    def magnification(self, value):
        return 1 + abs(value)

    def displace(self, value, sx, sy, h, w):
        sx -= value * w * (sy / max(h - 1, 1) - 0.5)  # content at row y moves by value*w*(y/(h-1) - 1/2)


@register
@dataclass(frozen=True)
class ZoomOp(Op):
    scale: Range = (1.1, 1.3)  # about the frame centre
    NAME: ClassVar[str] = "zoom"
    STAGE: ClassVar[str] = "resample"
    LIMITS: ClassVar[dict] = {"scale": (0.5, 2.0)}
    IDENTITY: ClassVar[Any] = 1.0

    def draw(self, rng):
        on, scale = self.fires(rng), uniform(rng, self.scale)
        return float(scale) if on else 1.0

    def magnification(self, value):
        return value


@dataclass(frozen=True)
class ColorDraw:
    brightness: float
    contrast: float
    gamma: float
    hue: float
    saturation: float
    value: float
    rgb_shift: tuple[float, float, float]


@register
@dataclass(frozen=True)
class ColorOp(Op):
    """Pointwise colour changes on a [0, 1] scale; the defaults lean darker, as the seed's (tunnels, dusk)."""
    brightness: Range = (0.6, 1.1)  # factor
    contrast: Range = (0.75, 1.15)  # factor about mid-grey
    gamma: Range = (0.9, 1.5)  # exponent; > 1 darkens the mid-tones
    hue: Range = (-8.0, 8.0)  # degrees
    saturation: Range = (0.7, 1.2)  # factor
    value: Range = (0.75, 1.05)  # factor
    rgb_shift: Range = (-0.05, 0.05)  # added to each channel separately
    NAME: ClassVar[str] = "color"
    LIMITS: ClassVar[dict] = {"brightness": (0.0, 4.0), "contrast": (0.0, 4.0), "gamma": (0.1, 10.0),
                              "hue": (-90.0, 90.0), "saturation": (0.0, 4.0), "value": (0.0, 4.0),
                              "rgb_shift": (-1.0, 1.0)}

    def draw(self, rng):
        on = self.fires(rng)
        values = ColorDraw(*(float(uniform(rng, getattr(self, f))) for f in ("brightness", "contrast", "gamma", "hue",
                                                                              "saturation", "value")),
                           rgb_shift=tuple(float(x) for x in uniform(rng, self.rgb_shift, 3)))
        return values if on else None

    def pixels(self, frames, value):
        return recolor(frames, value)


def recolor(frames: np.ndarray, c: ColorDraw) -> np.ndarray:
    """Colour change of (N, H, W, 3) uint8 RGB frames, as lookup tables over the whole batch at once."""
    shape = frames.shape
    flat = np.ascontiguousarray(frames).reshape(-1, shape[-2], 3)  # cv2 sees one tall image
    if c.hue != 0 or c.saturation != 1 or c.value != 1:
        levels = np.arange(256, dtype=np.float64)
        hue = np.where(levels < 180, (levels + round(c.hue / 2)) % 180, levels)  # 8-bit hue is degrees / 2
        hsv_lut = np.stack([hue, levels * c.saturation, levels * c.value], axis=-1)
        hsv = cv2.LUT(cv2.cvtColor(flat, cv2.COLOR_RGB2HSV), _to_lut(hsv_lut))
        flat = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    x = np.arange(256, dtype=np.float64) / 255 * c.brightness
    x = np.clip((x - 0.5) * c.contrast + 0.5, 0, 1) ** c.gamma
    rgb_lut = (x[:, None] + np.asarray(c.rgb_shift)[None, :]) * 255
    return cv2.LUT(flat, _to_lut(rgb_lut)).reshape(shape)


def _to_lut(table: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(table), 0, 255).astype(np.uint8).reshape(256, 1, 3)


@register
@dataclass(frozen=True)
class SkyOp(Op):
    """The top rows blacked out, so a model does not learn the clouds. Value: the fraction of rows."""
    fraction: Range = (0.3, 0.4)  # of the rows, from the top, blacked out
    NAME: ClassVar[str] = "sky"
    LIMITS: ClassVar[dict] = {"fraction": (0.0, 0.9)}
    IDENTITY: ClassVar[Any] = 0.0

    def draw(self, rng):
        on, fraction = self.fires(rng), uniform(rng, self.fraction)
        return float(fraction) if on else 0.0

    def pixels(self, frames, value):
        frames[:, :round(value * frames.shape[1])] = 0
        return frames
