"""Ram reading: every array the samples need, of every variant, held in (GPU) memory and gathered by index."""
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from cache.index import EPISODE, input_rows
from cache.store import CachedEpisode

MakeBatch = Callable[[dict[str, torch.Tensor], np.ndarray, np.ndarray], object]  # (arrays, ids, variants) -> batch


def load_arrays(episodes: Sequence[CachedEpisode], variants: Sequence[str], names: Sequence[str],
                device: torch.device) -> dict[str, torch.Tensor]:
    """name -> (variants, all cached rows of the episodes one after another, ...) in the stored dtype."""
    arrays = {}
    for name in names:
        per_variant = []
        for v in variants:
            parts = [ep.read(v, names=(name,)) for ep in episodes]
            if name in parts[0]:
                per_variant.append(torch.from_numpy(np.concatenate([p[name] for p in parts])))
        if per_variant:
            arrays[name] = torch.stack(per_variant).to(device)
    return arrays


def ram_bytes(episodes: Sequence[CachedEpisode], variants: Sequence[str], names: Sequence[str]) -> int:
    """What load_arrays holds in memory."""
    return sum(ep.group[v][name].nbytes for ep in episodes for v in variants for name in names if name in ep.group[v])


def ram_batches(arrays: dict[str, torch.Tensor], table: np.ndarray, strides: np.ndarray, seq_len: int,
                n_rows: Sequence[int], chosen: np.ndarray, order: np.ndarray, batch_size: int, drop_last: bool,
                make_batch: MakeBatch, device: torch.device) -> Iterator:
    """Batches of the samples table[order], in that order; n_rows: cached rows per episode."""
    offsets = np.array([0, *n_rows]).cumsum()
    for start in range(0, len(order), batch_size):
        pick = order[start:start + batch_size]
        if drop_last and len(pick) < batch_size:
            break
        samples, var = table[pick], chosen[pick]
        rows = torch.as_tensor(offsets[samples[:, EPISODE]][:, None] + input_rows(samples, strides, seq_len),
                               device=device)
        v = torch.as_tensor(var, device=device)[:, None]
        yield make_batch({name: values[v, rows] for name, values in arrays.items()}, pick, var)


def ram_order(n: int, seed: int, epoch: int, shuffle: bool, rank: int, world: int) -> np.ndarray:
    """This rank's samples of an epoch, in the order ram reading gives them."""
    order = np.random.default_rng([seed, epoch, 1]).permutation(n) if shuffle else np.arange(n)
    return order[rank::world]
