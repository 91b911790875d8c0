"""Deterministic train/val split by episode; with too few episodes, by contiguous time blocks."""
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.errors import require
from data.index import EpisodeInfo


@dataclass(frozen=True)
class Segment:
    """Rows [start, stop) of one episode. Samples never cross a segment's edges."""

    path: Path
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class SplitSettings:
    val_fraction: float = 0.1
    seed: int = 0
    min_units: int = 10  # below this many episodes, cut episodes into time blocks
    block_seconds: float = 30.0  # length of those blocks

    def __post_init__(self):
        require(0 <= self.val_fraction < 1, "--val-fraction", self.val_fraction,
                "a share in [0, 1): the part of the recordings kept for validation")
        require(self.seed >= 0, "--seed", self.seed, ">= 0")


@dataclass(frozen=True)
class Split:
    train: list[Segment]
    val: list[Segment]


def split_episodes(episodes: list[EpisodeInfo], settings: SplitSettings = SplitSettings()) -> Split:
    """Assign whole episodes (or whole blocks of them) to train or val; no row is on both sides.

    The result depends only on the episodes' paths and lengths and on the settings.
    """
    episodes = sorted(episodes, key=lambda e: str(e.path))
    units = [Segment(e.path, 0, e.n_frames) for e in episodes if e.n_frames > 0]
    if len(units) < settings.min_units:
        units = [block for e in episodes for block in _blocks(e, settings.block_seconds)]
    n_val = math.ceil(settings.val_fraction * len(units)) if len(units) >= 2 else 0
    order = np.random.default_rng(settings.seed).permutation(len(units))
    val_ids = set(order[:n_val].tolist())
    train = [u for i, u in enumerate(units) if i not in val_ids]
    val = [u for i, u in enumerate(units) if i in val_ids]
    return Split(train=train, val=val)


def _blocks(episode: EpisodeInfo, block_seconds: float) -> list[Segment]:
    size = max(1, round(block_seconds * (episode.fps or 1.0)))
    n = episode.n_frames
    edges = list(range(0, n, size)) + [n]
    if len(edges) > 2 and edges[-1] - edges[-2] < size // 2:  # fold a short tail into the last block
        edges.pop(-2)
    return [Segment(episode.path, a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]
