"""What stage 1 is asked to do: its settings, the episodes it takes and the rows of each it caches.
Shared by the extraction (pipeline.py) and the size estimate (estimate.py), which the extraction consults."""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cache.reduce import Reduction
from data.episode import Episode
from data.errors import UserError, require
from data.index import EpisodeInfo, index_episodes
from data.profiles import GameProfile, load_profile


MAX_BLOCK_ROWS = 8192
HUD_CHOICES = ("keep", "distort")


@dataclass(frozen=True)
class ExtractSettings:
    recordings: list[Path]
    cache: Path
    backbone: str = "dinov2_vitb14_reg"
    weights: str = "official"
    profile: str | None = None  # None: the profile the episodes were recorded with
    reduction: Reduction = field(default_factory=Reduction)  # applied to the last block and to each of `layers`
    layers: tuple[int, ...] = ()  # earlier blocks (0-based) whose patch tokens are stored beside the last's
    variants: tuple[str, ...] | None = None  # None: every variant of the profile's augmentation spec
    hud: str = "keep"  # keep: HUD rectangles (the minimap) come out of every variant as recorded; distort: not
    augment_seed: int = 0
    block_rows: int = 256
    batch_size: int = 64  # backbone batch; blocks are cut into batches of this size
    shard: tuple[int, int] = (1, 1)  # (K, N): this process extracts episodes K, K+N, K+2N, ...
    workers: int = 1  # threads running the backbone at once, sharing out torch's CPU threads (2-core CPUs: 2)
    device: str = "auto"
    bf16: bool | None = None  # None: where it is fast (backbone.fast_bf16: CUDA, CPUs with AVX512-BF16/AMX)
    int8_backbone: bool = False  # Linear layers in dynamic int8: the fast path on CPUs without AMX (int8_fits)
    compile: bool = False
    refresh: bool = False  # re-extract recordings that changed since extraction
    kinds: tuple[str, ...] | None = None
    progress: bool = True
    strict: bool = False  # a damaged recording is an error instead of being skipped with a warning

    def __post_init__(self):
        """Refuses a bad option before anything is read or written (so it never reaches a fingerprint)."""
        require(1 <= self.block_rows <= MAX_BLOCK_ROWS, "--block-rows", self.block_rows,
                f"between 1 and {MAX_BLOCK_ROWS} frames (a block is one chunk, held in memory)")
        require(self.hud in HUD_CHOICES, "--hud", self.hud, " or ".join(HUD_CHOICES))
        require(self.batch_size >= 1, "--batch-size", self.batch_size, "at least 1 frame")
        require(self.workers >= 1, "--workers", self.workers, "at least 1 thread")
        k, n = self.shard
        require(1 <= k <= n, "--shard", f"{k}/{n}", "K/N with K between 1 and N")


def select_episodes(settings: ExtractSettings, log=print) -> tuple[list[EpisodeInfo], GameProfile]:
    """The episodes to extract (every shard's; damaged ones skipped with a warning, or refused with
    settings.strict) and the game profile they are extracted with."""
    episodes = index_episodes(settings.recordings, kinds=list(settings.kinds) if settings.kinds else None,
                              strict=settings.strict)
    if not episodes:
        kinds = f" of kind {', '.join(settings.kinds)}" if settings.kinds else ""
        raise UserError(f"no episodes{kinds} in {', '.join(map(str, settings.recordings))}")
    profile, episodes = episode_profile(settings, episodes, log)
    return episodes, profile


def episode_profile(settings: ExtractSettings, episodes: list[EpisodeInfo], log) -> tuple[GameProfile, list[EpisodeInfo]]:
    """The game profile, and the episodes whose frames have its size: the others are skipped with a
    warning (refused with settings.strict); none of that size is a wrong --game."""
    names = {e.profile for e in episodes if e.profile}
    if settings.profile is None and len(names) > 1:
        raise UserError(f"recordings mix game profiles {sorted(names)}; extract them into separate caches")
    profile = load_profile(settings.profile or (names.pop() if names else "gta5"))
    shapes = {e.path: Episode(e.path).frame_shape for e in episodes}
    fitting = [e for e in episodes if shapes[e.path] == profile.frame_shape]
    if not fitting or (settings.strict and len(fitting) < len(episodes)):
        raise UserError(f"recordings have frames {sorted(set(shapes.values()))}, profile {profile.name} stores "
                        f"{profile.frame_shape}; pass the right --game")
    for e in episodes:
        if shapes[e.path] != profile.frame_shape:
            log(f"warning: skipping {e.path}: frames {shapes[e.path]}, not the {profile.frame_shape} of profile "
                f"{profile.name}")
    return profile, fitting


def variant_names(profile: GameProfile, wanted: tuple[str, ...] | None) -> list[str]:
    names = [v.name for v in profile.augment.variants]
    if wanted is None:
        return names
    unknown = [v for v in wanted if v not in names]
    if unknown:
        raise UserError(f"unknown variant(s) {', '.join(unknown)}; profile {profile.name} has {', '.join(names)}")
    return [v for v in names if v in wanted]


def cache_rows(ep: Episode, fps: float | None) -> np.ndarray:
    """Recording rows that get cached: after the stuck padding, at the cache frame rate."""
    first = ep.pad_frames
    if first >= len(ep):
        return np.zeros(0, dtype=np.int64)
    if fps is None or fps >= ep.fps:
        return np.arange(first, len(ep), dtype=np.int64)
    t = ep.t[first:]
    ticks = np.arange(t[0], t[-1] + 1e-9, 1.0 / fps)
    return np.unique(np.searchsorted(t, ticks - 1e-9)) + first
