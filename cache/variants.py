"""Which augmentation variant each sample gets in an epoch, and its label as that variant changed it.

The draw is a function of (seed, epoch) alone, so ram and stream reading give the same samples. The label
is the recording's keys at the sample's label row, through data.augment's label rule for the variant's
transform of the block the sample lies in (labels never come from the cache).
"""
from collections.abc import Sequence

import numpy as np

from cache.index import EPISODE, LABEL, LAST, SAME_BLOCK, block_of
from data.augment import CLEAN, AugmentSpec, variant_keys


def clean_index(variants: Sequence[str]) -> int:
    return list(variants).index(CLEAN) if CLEAN in variants else 0


def draw_variants(table: np.ndarray, weights: np.ndarray, variants: Sequence[str], seed: int,
                  epoch: int) -> np.ndarray:
    """Variant index per sample: drawn by `weights` among all variants where the sequence lies in one block
    (one augmentation transform), clean otherwise."""
    rng = np.random.default_rng([seed, epoch])
    drawn = rng.choice(len(variants), size=len(table), p=weights / weights.sum())
    return np.where(table[:, SAME_BLOCK] == 1, drawn, clean_index(variants))


def sample_labels(table: np.ndarray, chosen: np.ndarray, *, keys: Sequence[np.ndarray], rows: Sequence[np.ndarray],
                  episode_ids: Sequence[str], block_rows: np.ndarray, variants: Sequence[str], spec: AugmentSpec,
                  augment_seed: int) -> np.ndarray:
    """(N, 4) uint8 keys of each sample's label row, transformed as its variant `chosen` transformed the pixels.

    keys[e]: episode e's recorded keys; rows[e]: the recording row of each of its cache rows. Computed per
    (episode, block, variant): all samples there share one transform."""
    out = np.empty((len(table), 4), np.uint8)
    groups = np.stack([table[:, EPISODE], block_of(table, block_rows), chosen], axis=1)
    unique, inverse, counts = np.unique(groups, axis=0, return_inverse=True, return_counts=True)
    by_group = np.split(np.argsort(inverse.ravel(), kind="stable"), np.cumsum(counts)[:-1])
    for (e, block, v), members in zip(unique, by_group):
        recorded = keys[e]
        out[members] = variant_keys(recorded[table[members, LABEL]], recorded[rows[e][table[members, LAST]]],
                                    variants[v], seed=augment_seed, episode=episode_ids[e], block=int(block),
                                    spec=spec)
    return out
