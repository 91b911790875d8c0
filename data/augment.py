"""Minimap-preserving augmentation as a few fixed variants per frame, computed before the backbone.

A variant is a named set of ops (flip, warp, zoom, color, sky), each firing with probability `p` and
drawing its parameters from [low, high] ranges. The draw is a pure function of (seed, episode, block,
variant name): every frame of one call gets the same transform and re-running gives the same bytes.

HUD rectangles of the game profile (the minimap) come out of every variant exactly as they went in,
or flipped in place for a flip. Before a warp or zoom they are inpainted so the resampling does not
smear them into the scene. A flip alone needs no inpainting: the mirror image of each HUD rectangle
keeps its own pixels, which makes a flip its own inverse.

Labels follow the pixels: a flip swaps a and d; a warp is applied only to frames whose keys are w alone
or nothing and adds the corrective steer (content shifted left at the bottom -> a, right -> d), as the
seed did after comma.ai's lateral-planning idea.

Profile TOML (see data/profiles/gta5.toml); "clean" is always there and always first:

    [augment.warp]
    warp = { p = 1.0, shift = [0.2, 0.42] }
    color = { p = 0.5 }                        # omitted fields keep their defaults
"""
import hashlib
import json
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import ClassVar

import cv2
import numpy as np

from data.errors import UserError
from data.labels import A, D, S

CLEAN = "clean"
TEXT_VERSION = "augment-v1"  # bump when a transform's pixels change, so cached features are refused
INPAINT_RADIUS = 2  # at half resolution
INPAINT_PAD = 8  # context around a HUD rectangle given to cv2.inpaint; the rest of the frame is not touched

Range = tuple[float, float]


# --- the spec ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FlipOp:
    p: float = 1.0
    LIMITS: ClassVar[dict] = {}


@dataclass(frozen=True)
class WarpOp:
    """Rows shifted progressively: the bottom row moves shift/2 one way, the top row shift/2 the other,
    then a zoom of 1 + shift hides the borders (the seed: 50..100 px of 240)."""
    p: float = 1.0
    shift: Range = (0.2, 0.42)  # fraction of the frame width
    LIMITS: ClassVar[dict] = {"shift": (0.0, 0.5)}


@dataclass(frozen=True)
class ZoomOp:
    p: float = 1.0
    scale: Range = (1.1, 1.3)  # about the frame centre
    LIMITS: ClassVar[dict] = {"scale": (0.5, 2.0)}


@dataclass(frozen=True)
class ColorOp:
    """Pointwise colour changes on a [0, 1] scale; the defaults lean darker, as the seed's (tunnels, dusk)."""
    p: float = 1.0
    brightness: Range = (0.6, 1.1)  # factor
    contrast: Range = (0.75, 1.15)  # factor about mid-grey
    gamma: Range = (0.9, 1.5)  # exponent; > 1 darkens the mid-tones
    hue: Range = (-8.0, 8.0)  # degrees
    saturation: Range = (0.7, 1.2)  # factor
    value: Range = (0.75, 1.05)  # factor
    rgb_shift: Range = (-0.05, 0.05)  # added to each channel separately
    LIMITS: ClassVar[dict] = {"brightness": (0.0, 4.0), "contrast": (0.0, 4.0), "gamma": (0.1, 10.0),
                              "hue": (-90.0, 90.0), "saturation": (0.0, 4.0), "value": (0.0, 4.0),
                              "rgb_shift": (-1.0, 1.0)}


@dataclass(frozen=True)
class SkyOp:
    p: float = 1.0
    fraction: Range = (0.3, 0.4)  # of the rows, from the top, blacked out
    LIMITS: ClassVar[dict] = {"fraction": (0.0, 0.9)}


OPS = {"flip": FlipOp, "warp": WarpOp, "zoom": ZoomOp, "color": ColorOp, "sky": SkyOp}


@dataclass(frozen=True)
class Variant:
    """One augmentation variant; ops run in this field order (geometry, colour, sky)."""
    name: str
    flip: FlipOp | None = None
    warp: WarpOp | None = None
    zoom: ZoomOp | None = None
    color: ColorOp | None = None
    sky: SkyOp | None = None

    def ops(self) -> dict:
        return {name: getattr(self, name) for name in OPS if getattr(self, name) is not None}


@dataclass(frozen=True)
class AugmentSpec:
    variants: tuple[Variant, ...] = (Variant(CLEAN),)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variants)

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise UserError(f"no augmentation variant '{name}'; the spec has {', '.join(self.names)}")

    def subset(self, names) -> "AugmentSpec":
        """These variants only, in spec order (what one feature cache holds)."""
        return AugmentSpec(tuple(self.variant(n) for n in self.names if n in set(names)))

    def text(self) -> str:
        """Stable text form, for the feature cache's fingerprint; `from_text` reads it back."""
        table = {v.name: {op: _op_table(o) for op, o in v.ops().items()} for v in self.variants}
        return f"{TEXT_VERSION} {json.dumps(table, separators=(',', ':'))}"

    @classmethod
    def from_text(cls, text: str) -> "AugmentSpec":
        return _spec_from_text(text)

    @classmethod
    def from_table(cls, table: dict) -> "AugmentSpec":
        """The profile's [augment] table: {variant: {op: {field: value or [low, high]}}}.

        Raises ValueError naming the offending key.
        """
        if not isinstance(table, dict):
            raise ValueError("[augment] must be a table of variants")
        variants = [Variant(CLEAN)]
        for name, ops in table.items():
            where = f"augment.{name}"
            if not isinstance(ops, dict):
                raise ValueError(f"{where} must be a table of ops ({', '.join(OPS)})")
            if name == CLEAN:
                if ops:
                    raise ValueError(f"{where} is the unaugmented frame and takes no ops")
                continue
            parsed = {}
            for op, params in ops.items():
                if op not in OPS:
                    raise ValueError(f"{where}: unknown op '{op}'; ops are {', '.join(OPS)}")
                parsed[op] = _parse_op(OPS[op], params, f"{where}.{op}")
            if not parsed:
                raise ValueError(f"{where} has no ops; give at least one of {', '.join(OPS)}")
            variants.append(Variant(name, **parsed))
        return cls(tuple(variants))


def _op_table(op) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(op).items()}


def _parse_op(cls, params, where: str):
    if not isinstance(params, dict):
        raise ValueError(f"{where} must be an inline table, e.g. {{ p = 1.0 }}")
    known = {f.name for f in fields(cls)}
    values = {}
    for key, value in params.items():
        if key not in known:
            raise ValueError(f"{where}: unknown field '{key}'; fields are {', '.join(sorted(known))}")
        if key == "p":
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{where}.p must be a probability in [0, 1], not {value!r}")
            values[key] = float(value)
            continue
        lo_limit, hi_limit = cls.LIMITS[key]
        if isinstance(value, (int, float)):
            value = [value, value]
        if (not isinstance(value, list) or len(value) != 2 or not all(isinstance(x, (int, float)) for x in value)
                or not lo_limit <= value[0] <= value[1] <= hi_limit):
            raise ValueError(f"{where}.{key} must be [low, high] with {lo_limit} <= low <= high <= {hi_limit}, "
                             f"not {value!r}")
        values[key] = (float(value[0]), float(value[1]))
    return cls(**values)


@lru_cache(maxsize=64)
def _spec_from_text(text: str) -> AugmentSpec:
    version, _, body = text.partition(" ")
    if version != TEXT_VERSION:
        raise UserError(f"augmentation spec '{version}' was written by another version of this tool "
                        f"({TEXT_VERSION} here); re-extract the feature cache")
    return AugmentSpec.from_table(json.loads(body))


# --- the draw: one variant's random parameters for one block -----------------------------------------

@dataclass(frozen=True)
class ColorDraw:
    brightness: float
    contrast: float
    gamma: float
    hue: float
    saturation: float
    value: float
    rgb_shift: tuple[float, float, float]


@dataclass(frozen=True)
class Draw:
    """What a variant does to every frame of one block."""
    flip: bool = False
    warp: float = 0.0  # bottom row vs top row shift, fraction of width; < 0: bottom content moves left (steer a)
    zoom: float = 1.0
    color: ColorDraw | None = None
    sky: float = 0.0  # fraction of rows blacked out from the top

    @property
    def geometric(self) -> bool:
        return self.flip or self.warp != 0 or self.zoom != 1


@lru_cache(maxsize=4096)
def draw_params(variant: Variant, *, seed: int, episode: str, block: int) -> Draw:
    """The variant's random parameters, a pure function of (seed, episode, block, variant name)."""
    key = f"{seed}\x1f{episode}\x1f{block}\x1f{variant.name}".encode()
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))

    def fires(op) -> bool:
        return op is not None and rng.random() < op.p

    def uniform(r: Range, size=None):
        return rng.uniform(r[0], r[1], size)

    # Every present op draws its numbers whether it fires or not, so one op's p does not move the others.
    draw = {}
    if variant.flip is not None:
        draw["flip"] = bool(fires(variant.flip))
    if variant.warp is not None:
        on, shift, left = fires(variant.warp), uniform(variant.warp.shift), rng.random() < 0.5
        draw["warp"] = float(-shift if left else shift) if on else 0.0
    if variant.zoom is not None:
        on, scale = fires(variant.zoom), uniform(variant.zoom.scale)
        draw["zoom"] = float(scale) if on else 1.0
    if variant.color is not None:
        c, on = variant.color, fires(variant.color)
        values = ColorDraw(*(float(uniform(getattr(c, f))) for f in ("brightness", "contrast", "gamma", "hue",
                                                                         "saturation", "value")),
                           rgb_shift=tuple(float(x) for x in uniform(c.rgb_shift, 3)))
        draw["color"] = values if on else None
    if variant.sky is not None:
        on, fraction = fires(variant.sky), uniform(variant.sky.fraction)
        draw["sky"] = float(fraction) if on else 0.0
    return Draw(**draw)


# --- labels --------------------------------------------------------------------------------------

def warp_rows(keys: np.ndarray) -> np.ndarray:
    """Frames a warp may change: w alone or no key (a, s, d all up)."""
    keys = np.asarray(keys)
    return (keys[..., A] == 0) & (keys[..., S] == 0) & (keys[..., D] == 0)


def apply_keys(keys: np.ndarray, draw: Draw, warped: np.ndarray) -> np.ndarray:
    """Labels after the draw: the corrective steer added where `warped`, then a and d swapped for a flip."""
    out = np.array(keys, dtype=np.uint8, copy=True)
    if draw.warp != 0:
        out[..., A if draw.warp < 0 else D] |= np.asarray(warped, dtype=np.uint8)
    if draw.flip:
        out[..., [A, D]] = out[..., [D, A]]
    return out


def variant_keys(label_keys, frame_keys, variant: str | Variant, *, seed: int, episode: str, block: int,
                 spec: str | AugmentSpec) -> np.ndarray:
    """The label of a sample as its variant changed it, without touching pixels (stage 2).

    `frame_keys` are the keys of the frame the variant transformed (they decide whether it was warped);
    `label_keys` are the keys the model learns for it (possibly shifted later in time).
    """
    if isinstance(variant, str):
        spec = AugmentSpec.from_text(spec) if isinstance(spec, str) else spec
        variant = spec.variant(variant)
    if variant.flip is None and variant.warp is None:
        return np.array(label_keys, dtype=np.uint8, copy=True)
    draw = draw_params(variant, seed=seed, episode=episode, block=block)
    return apply_keys(label_keys, draw, warp_rows(frame_keys))


# --- pixels --------------------------------------------------------------------------------------

def apply_variant(frames: np.ndarray, keys: np.ndarray, variant: str | Variant, profile, *, seed: int,
                  episode: str, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames (N, H, W, 3) uint8 RGB and keys (N, 4) through one variant; returns new arrays, same shapes.

    keys[i] decides whether frame i may be warped and is changed with it: pass the keys of each frame.
    """
    frames, keys = np.asarray(frames), np.asarray(keys)
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
    if keys.shape != (len(frames), 4):
        raise ValueError(f"keys must be ({len(frames)}, 4), got {keys.shape}")
    if isinstance(variant, str):
        variant = profile.augment.variant(variant)
    draw = draw_params(variant, seed=seed, episode=episode, block=block)
    warped = warp_rows(keys) if draw.warp != 0 else np.zeros(len(frames), dtype=bool)
    new_keys = apply_keys(keys, draw, warped)
    rects = list(profile.hud.values())
    if not (draw.geometric or draw.color or draw.sky):
        return frames.copy(), new_keys

    out = _geometry(frames, draw, warped, rects) if draw.geometric else frames.copy()
    if draw.color is not None:
        out = recolor(out, draw.color)
    if draw.sky:
        out[:, :round(draw.sky * frames.shape[1])] = 0
    for r in rects:  # the HUD exactly as recorded, flipped in place for a flip
        hud = frames[:, r.y0:r.y1, r.x0:r.x1]
        out[:, r.y0:r.y1, r.x0:r.x1] = hud[:, :, ::-1] if draw.flip else hud
    return out, new_keys


def _geometry(frames: np.ndarray, draw: Draw, warped: np.ndarray, rects) -> np.ndarray:
    n, h, w, _ = frames.shape
    plain = remap_tables(h, w, 0.0, draw.zoom)
    sheared = remap_tables(h, w, draw.warp, draw.zoom) if warped.any() else None
    out = frames.copy()
    resampled = np.zeros(n, dtype=bool)
    for i in range(n):
        tables = sheared if warped[i] else plain
        if tables is not None:
            out[i] = cv2.remap(inpaint_hud(frames[i], rects), *tables, cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101)
            resampled[i] = True
    if draw.flip:
        out = cv2.flip(out.reshape(-1, w, 3), 1).reshape(out.shape)  # numpy's reversed copy is 4x slower
        for r in rects:  # no inpainting: the HUD's mirror image keeps its own pixels, so flip(flip(x)) == x
            m = r.flipped(w)
            out[~resampled, m.y0:m.y1, m.x0:m.x1] = frames[~resampled, m.y0:m.y1, m.x0:m.x1]
    return out


def remap_tables(h: int, w: int, warp: float, zoom: float):
    """cv2.remap tables for a zoom about the centre (times 1 + |warp|) and the diagonal warp; None if identity."""
    if warp == 0 and zoom == 1:
        return None
    scale = zoom * (1 + abs(warp))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    sy = cy + (ys - cy) / scale
    sx = cx + (xs - cx) / scale
    sx -= warp * w * (sy / max(h - 1, 1) - 0.5)  # content at row y moves by warp*w*(y/(h-1) - 1/2)
    return cv2.convertMaps(sx.astype(np.float32), sy.astype(np.float32), cv2.CV_16SC2)


def inpaint_hud(frame: np.ndarray, rects) -> np.ndarray:
    """A copy of one frame with each HUD rectangle (grown by 1 px) filled from its surroundings.

    cv2.inpaint costs by the masked area times the radius (~2 ms per frame for the gta5 minimap at
    radius 3), so it runs on a padded crop at half resolution; the smooth fill only feeds the resampling.
    """
    out = frame.copy()
    h, w = frame.shape[:2]
    for r in rects:
        y0, y1 = max(r.y0 - INPAINT_PAD, 0), min(r.y1 + INPAINT_PAD, h)
        x0, x1 = max(r.x0 - INPAINT_PAD, 0), min(r.x1 + INPAINT_PAD, w)
        crop = out[y0:y1, x0:x1]
        mask = np.zeros(crop.shape[:2], dtype=np.uint8)
        mask[max(r.y0 - 1 - y0, 0):r.y1 + 1 - y0, max(r.x0 - 1 - x0, 0):r.x1 + 1 - x0] = 255
        small = cv2.resize(crop, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        small_mask = cv2.resize(mask, small.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        small_mask = cv2.dilate(small_mask, np.ones((3, 3), np.uint8))  # no half-res source pixel mixes in HUD
        filled = cv2.resize(cv2.inpaint(small, small_mask, INPAINT_RADIUS, cv2.INPAINT_TELEA), crop.shape[1::-1],
                            interpolation=cv2.INTER_LINEAR)
        crop[mask > 0] = filled[mask > 0]
    return out


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
