"""A grid of one short sequence under every augmentation variant: rows are variants, columns frames.

Each tile is labelled with the keys before -> after the variant, so a user sees what the model will see.
Used by `python -m tools.inspect DIR --augment out.png`.
"""
from pathlib import Path

import cv2
import numpy as np

from data.atomic import write_image
from data.augment import apply_variant
from data.augment_ops import warp_rows
from data.episode import Episode
from data.errors import UserError
from data.labels import keys_text
from data.profiles import GameProfile

SEQUENCE_STRIDE_S = 0.25  # the seed's stride between sequence frames
TILE_SCALE = 2
BAR = 20  # label bar height in pixels, above and below each tile


def write_augment_grid(episode_path: str | Path, profile: GameProfile, out_png: str | Path,
                       start: int | None = None, length: int = 3, stride_frames: int | None = None,
                       seed: int = 0, episode_id: str | None = None, block: int = 0) -> Path:
    """Write the grid for frames start, start + stride, ... of one episode; returns the path written.

    start=None picks the sequence nearest the middle whose last frame a warp may change (w alone or no
    key), so the warp variant shows. The transform drawn is the one for (seed, episode_id, block);
    episode_id defaults to the episode's directory name.
    """
    ep = Episode(episode_path)
    out_png = Path(out_png)
    if out_png.suffix.lower() != ".png":
        raise UserError(f"{out_png}: the augmentation grid is written as PNG; give a .png path")
    if ep.frame_shape != profile.frame_shape:
        raise UserError(f"{ep.path}: frames are {ep.frame_shape}, profile {profile.name} stores "
                        f"{profile.frame_shape}; pass the right --game")
    if length < 1:
        raise UserError(f"sequence length must be at least 1, not {length}")
    stride = stride_frames or max(1, round(SEQUENCE_STRIDE_S * ep.fps))
    span = (length - 1) * stride
    first, last_start = ep.pad_frames, len(ep) - 1 - span
    if last_start < first:
        raise UserError(f"{ep.path}: {len(ep) - ep.pad_frames} usable frames, too few for {length} frames "
                        f"{stride} apart; lower the length or stride")
    if start is None:
        start = _pick_start(ep.keys[first:], first, last_start, span)
    elif not first <= start <= last_start:
        raise UserError(f"start {start} out of range: sequences of {ep.path} start at {first}..{last_start}")

    rows = np.arange(start, start + span + 1, stride)
    frames, keys, _ = ep.read(int(rows[0]), int(rows[-1]) + 1)
    frames, keys = frames[rows - rows[0]], keys[rows - rows[0]]
    grid = []
    for variant in profile.augment.variants:
        out, new_keys = apply_variant(frames, keys, variant, profile, seed=seed,
                                      episode=episode_id or ep.path.name, block=block)
        tiles = [_tile(out[i], f"{variant.name}  #{rows[i]}", f"{keys_text(keys[i])} -> {keys_text(new_keys[i])}")
                 for i in range(len(rows))]
        grid.append(np.hstack(tiles))
    write_image(out_png, np.vstack(grid))
    return out_png


def _pick_start(keys: np.ndarray, first: int, last_start: int, span: int) -> int:
    starts = np.arange(first, last_start + 1)
    middle = (first + last_start) // 2
    eligible = starts[warp_rows(keys[starts + span - first])]
    pool = eligible if len(eligible) else starts
    return int(pool[np.argmin(np.abs(pool - middle))])


def _tile(frame: np.ndarray, top: str, bottom: str) -> np.ndarray:
    img = cv2.resize(frame, None, fx=TILE_SCALE, fy=TILE_SCALE, interpolation=cv2.INTER_NEAREST)
    w = img.shape[1]
    tile = np.zeros((img.shape[0] + 2 * BAR, w + 2, 3), dtype=np.uint8)  # 2 px gap between columns
    tile[BAR:BAR + img.shape[0], :w] = img
    for text, y in ((top, 15), (bottom, tile.shape[0] - 5)):
        cv2.putText(tile, text, (4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
    return tile


