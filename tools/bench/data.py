"""Inputs for the benchmarks, made on the spot: recordings of moving frames, and feature caches of a
chosen size filled without running a backbone (read speed does not depend on the token values)."""
from pathlib import Path

import cv2
import numpy as np

from cache.store import CacheSpec, FeatureCache
from data.augment import AugmentSpec
from data.episode import Episode, EpisodeMeta, EpisodeWriter
from data.split import Segment


def scene_frames(n: int, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """uint8 frames of a camera panning over a smooth random landscape, with sensor noise: they compress
    about as much as game frames (constant frames would compress to nothing, pure noise not at all)."""
    rng = np.random.default_rng(seed)
    h, w, _ = shape
    coarse = rng.integers(0, 256, (h // 8 + 2, (w + n) // 8 + 2, 3), dtype=np.uint8)
    world = cv2.resize(coarse, (coarse.shape[1] * 8, coarse.shape[0] * 8), interpolation=cv2.INTER_CUBIC)
    frames = np.stack([world[:h, i:i + w] for i in range(n)]).astype(np.int16)
    frames += rng.integers(-4, 5, frames.shape, dtype=np.int16)
    return np.clip(frames, 0, 255).astype(np.uint8)


def write_recordings(root: Path, episodes: int, frames: int, fps: float, shape: tuple[int, int, int],
                     profile: str = "gta5", seed: int = 0) -> list[Path]:
    """`episodes` complete episodes of `frames` scene frames each, written by the episode store."""
    paths = []
    rng = np.random.default_rng(seed)
    for e in range(episodes):
        path = Path(root) / f"bench-{e:03d}.zarr"
        pixels = scene_frames(frames, shape, seed + e)
        keys = rng.integers(0, 2, (frames, 4), dtype=np.uint8)
        with EpisodeWriter(path, shape, EpisodeMeta(fps=fps, profile=profile, source="bench")) as writer:
            writer.append(pixels, keys, np.arange(frames) / fps)
        paths.append(path)
    return paths


def write_token_cache(path: Path, recordings: list[Path], grid: tuple[int, int], channels: int,
                      block_rows: int = 256, seed: int = 0) -> FeatureCache:
    """A clean-only fp16 cache with random tokens of the given geometry for every row of the recordings,
    laid out by cache.store exactly as stage 1 lays it out."""
    spec = CacheSpec(backbone="bench-random-tokens", weights_digest="none", weights_label="random tokens (bench)",
                     weights_source="none", preprocess={}, precision="fp32", augment=AugmentSpec.from_table({}).text(),
                     augment_seed=0,
                     reduction={"dtype": "fp16", "pca_dim": None, "pca_frames": 1, "fps": None},
                     block_rows=block_rows, grid=tuple(grid), channels=channels, registers=0)
    cache = FeatureCache.create_or_open(path, spec)
    rng = np.random.default_rng(seed)
    patch = rng.standard_normal((block_rows, grid[0] * grid[1], channels), dtype=np.float32).astype(np.float16)
    cls = patch[:, 0].copy()
    for rec_path in recordings:
        rec = Episode(rec_path)
        ep = cache.add_episode(rec_path.name, rec_path.resolve(), rec.digest(), rec.kind,
                               np.arange(len(rec)), ["clean"])
        for b in range(ep.n_blocks):
            start, stop = ep.block_range(b)
            ep.write_block("clean", b, {"patch": patch[:stop - start], "cls": cls[:stop - start]})
    return FeatureCache.open(path)


def whole_episodes(cache: FeatureCache) -> list[Segment]:
    """Every row of every cached episode as one training segment (no validation split)."""
    return [Segment(ep.recording, 0, len(Episode(ep.recording))) for ep in cache.episodes()]


def array_bytes(folder: Path) -> int:
    """Bytes of the chunk files of a Zarr v3 array: its data on disk, without the metadata."""
    return sum(f.stat().st_size for f in (Path(folder) / "c").rglob("*") if f.is_file())
