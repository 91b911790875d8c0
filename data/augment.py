"""Minimap-preserving augmentation as a few fixed variants per frame, computed before the backbone.

A variant is a named set of ops (data/augment_ops.py: flip, warp, zoom, color, sky), each firing with
probability `p` and drawing its parameters from [low, high] ranges. The draw is a pure function of (seed,
episode, block, variant name): every frame of one call gets the same transform and re-running gives the
same bytes. Labels follow the pixels: each op that fired changes them by its own rule, in the order it
changes the pixels (stage 2 recomputes them from the recording, without the pixels: variant_keys).

HUD rectangles of the game profile (the minimap) come out of every variant exactly as they went in,
or flipped in place for a mirror; this module is the one place that keeps them. Before a resampling op
(warp, zoom) they are inpainted so the resampling does not smear them into the scene. A mirror alone needs
no inpainting: the mirror image of each HUD rectangle keeps its own pixels, which makes a flip its own
inverse.

Profile TOML (see data/profiles/gta5.toml); "clean" is always there and always first:

    [augment.warp]
    warp = { p = 1.0, shift = [0.2, 0.42] }
    color = { p = 0.5 }                        # omitted fields keep their defaults
"""
import hashlib
import json
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from data.augment_ops import OPS, STAGES, Op
from data.errors import UserError

CLEAN = "clean"
TEXT_VERSION = "augment-v1"  # bump when a transform's pixels change, so cached features are refused
INPAINT_RADIUS = 2  # at half resolution
INPAINT_PAD = 8  # context around a HUD rectangle given to cv2.inpaint; the rest of the frame is not touched


# --- the spec ------------------------------------------------------------------------------------

def _registry_order(op: Op) -> int:
    return list(OPS).index(op.NAME)


@dataclass(frozen=True)
class Variant:
    """One augmentation variant: a name and its ops, at most one of each, kept in registry order."""
    name: str
    ops: tuple[Op, ...] = ()

    def __post_init__(self):
        names = [op.NAME for op in self.ops]
        if len(set(names)) < len(names):
            raise ValueError(f"variant {self.name} names an op twice: {names}")
        object.__setattr__(self, "ops", tuple(sorted(self.ops, key=_registry_order)))

    def op(self, name: str) -> Op | None:
        return next((op for op in self.ops if op.NAME == name), None)


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
        table = {v.name: {op.NAME: _op_table(op) for op in v.ops} for v in self.variants}
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
            parsed = []
            for op, params in ops.items():
                if op not in OPS:
                    raise ValueError(f"{where}: unknown op '{op}'; ops are {', '.join(OPS)}")
                parsed.append(_parse_op(OPS[op], params, f"{where}.{op}"))
            if not parsed:
                raise ValueError(f"{where} has no ops; give at least one of {', '.join(OPS)}")
            variants.append(Variant(name, tuple(parsed)))
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


# --- the draw: one variant's values for one block ---------------------------------------------------

@dataclass(frozen=True)
class Draw:
    """What a variant does to every frame of one block: the value each op that fired drew, in registry order.
    An op missing here changes nothing."""
    fired: tuple[tuple[Op, Any], ...] = ()

    @classmethod
    def of(cls, **values) -> "Draw":
        """A draw of these values, by op name, for ops with default parameters (for tests and tools)."""
        return _draw([(OPS[name](), value) for name, value in values.items()])

    def get(self, name: str):
        """The value op `name` drew, or its identity when it did not fire."""
        return next((value for op, value in self.fired if op.NAME == name), OPS[name].IDENTITY)

    def stage(self, stage: str) -> list[tuple[Op, Any]]:
        return [(op, value) for op, value in self.fired if op.STAGE == stage]

    def in_order(self) -> list[tuple[Op, Any]]:
        """The ops that fired, in the order they change pixels and labels: by stage, then registry order."""
        return [pair for stage in STAGES for pair in self.stage(stage)]


def _draw(pairs) -> Draw:
    return Draw(tuple(sorted(((op, v) for op, v in pairs if v != op.IDENTITY), key=lambda p: _registry_order(p[0]))))


@lru_cache(maxsize=4096)
def draw_params(variant: Variant, *, seed: int, episode: str, block: int) -> Draw:
    """The variant's values, a pure function of (seed, episode, block, variant name)."""
    key = f"{seed}\x1f{episode}\x1f{block}\x1f{variant.name}".encode()
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))
    return _draw([(op, op.draw(rng)) for op in variant.ops])  # registry order: the order numbers are drawn


# --- labels --------------------------------------------------------------------------------------

def apply_keys(keys: np.ndarray, draw: Draw, frame_keys: np.ndarray) -> np.ndarray:
    """Labels (..., 4) after the draw: each op's rule where it selects the frame by `frame_keys` (the keys of
    the frame it transformed), in pixel order."""
    out = np.array(keys, dtype=np.uint8, copy=True)
    for op, value in draw.in_order():
        out = op.keys(out, value, op.selects(frame_keys))
    return out


def variant_keys(label_keys, frame_keys, variant: str | Variant, *, seed: int, episode: str, block: int,
                 spec: str | AugmentSpec) -> np.ndarray:
    """The label of a sample as its variant changed it, without touching pixels (stage 2).

    `frame_keys` are the keys of the frame the variant transformed (they decide which ops select it);
    `label_keys` are the keys the model learns for it (possibly shifted later in time).
    """
    if isinstance(variant, str):
        spec = AugmentSpec.from_text(spec) if isinstance(spec, str) else spec
        variant = spec.variant(variant)
    return apply_keys(label_keys, draw_params(variant, seed=seed, episode=episode, block=block), frame_keys)


# --- pixels --------------------------------------------------------------------------------------

def apply_variant(frames: np.ndarray, keys: np.ndarray, variant: str | Variant, profile, *, seed: int,
                  episode: str, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames (N, H, W, 3) uint8 RGB and keys (N, 4) through one variant; returns new arrays, same shapes.

    keys[i] decides which ops change frame i (a warp only w alone or nothing) and is changed with it: pass
    the keys of each frame.
    """
    frames, keys = np.asarray(frames), np.asarray(keys)
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
    if keys.shape != (len(frames), 4):
        raise ValueError(f"keys must be ({len(frames)}, 4), got {keys.shape}")
    if isinstance(variant, str):
        variant = profile.augment.variant(variant)
    draw = draw_params(variant, seed=seed, episode=episode, block=block)
    new_keys = apply_keys(keys, draw, keys)
    rects = list(profile.hud.values())
    if not draw.fired:
        return frames.copy(), new_keys

    out, resampled = _resample(frames, keys, draw.stage("resample"), rects)
    mirrored = False
    for op, value in draw.stage("mirror"):
        out, mirrored = op.pixels(out, value), not mirrored
    if mirrored:  # no inpainting: the HUD's mirror image keeps its own pixels, so flip(flip(x)) == x
        for r in rects:
            m = r.flipped(frames.shape[2])
            out[~resampled, m.y0:m.y1, m.x0:m.x1] = frames[~resampled, m.y0:m.y1, m.x0:m.x1]
    for op, value in draw.stage("pixels"):
        out = op.pixels(out, value)
    for r in rects:  # the HUD exactly as recorded, mirrored in place for a mirror
        hud = frames[:, r.y0:r.y1, r.x0:r.x1]
        out[:, r.y0:r.y1, r.x0:r.x1] = hud[:, :, ::-1] if mirrored else hud
    return out, new_keys


def _resample(frames: np.ndarray, keys: np.ndarray, moves: list[tuple[Op, Any]], rects) -> tuple[np.ndarray, np.ndarray]:
    """(a copy of the frames with each one remapped once by the resample ops that select it, which frames were)."""
    n, h, w, _ = frames.shape
    out = frames.copy()
    resampled = np.zeros(n, dtype=bool)
    if not moves:
        return out, resampled
    selected = np.stack([op.selects(keys) for op, _ in moves], axis=1)  # (N, ops)
    for pattern in np.unique(selected, axis=0):
        tables = remap_tables(h, w, [move for move, on in zip(moves, pattern) if on])
        if tables is None:
            continue
        for i in np.flatnonzero((selected == pattern).all(axis=1)):
            out[i] = cv2.remap(inpaint_hud(frames[i], rects), *tables, cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101)
            resampled[i] = True
    return out, resampled


def remap_tables(h: int, w: int, moves: list[tuple[Op, Any]]):
    """cv2.remap tables for the ops' zoom about the centre, then their displacements; None for no ops."""
    if not moves:
        return None
    scale = 1.0
    for op, value in moves:
        scale *= op.magnification(value)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    sy = cy + (ys - cy) / scale
    sx = cx + (xs - cx) / scale
    for op, value in moves:
        op.displace(value, sx, sy, h, w)
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
