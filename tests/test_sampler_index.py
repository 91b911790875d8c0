"""The sampler's index stays numpy arrays of a bounded size per sample, whatever the cache's size: nothing
in it holds a Python object per row (a cache of an hour at 80 fps has ~10^6 rows per variant)."""
import numpy as np
import pytest
import torch

from cache.sampler import SamplerSettings, SequenceSampler
from tools.bench.data import whole_episodes, write_recordings, write_token_cache


def sampler_after_an_epoch(tmp_path, frames: int, mode: str) -> SequenceSampler:
    recordings = write_recordings(tmp_path / f"rec{frames}", 3, frames, 80.0, (8, 8, 3))
    cache = write_token_cache(tmp_path / f"cache{frames}", recordings, (2, 3), 8, block_rows=64)
    sampler = SequenceSampler(cache, whole_episodes(cache), SamplerSettings(batch_size=16, mode=mode))
    assert sum(len(b.keys) for b in sampler.epoch(0)) == len(sampler)
    return sampler


@pytest.mark.parametrize("mode", ["stream", "ram"])
def test_index_is_arrays_of_bounded_bytes_per_sample(tmp_path, mode):
    small, large = (sampler_after_an_epoch(tmp_path, n, mode) for n in (256, 2048))
    assert len(large) > 8 * len(small)
    for sampler in (small, large):
        for name, value in vars(sampler).items():
            if isinstance(value, (list, tuple, dict, set)):  # per episode or per variant, never per row
                assert len(value) <= len(sampler.episodes), name
                assert all(isinstance(v, (np.ndarray, int, str)) or hasattr(v, "block_rows") for v in value), name
            elif isinstance(value, (np.ndarray, torch.Tensor)) and name != "_ram":
                assert value.ndim == 0 or value.shape[0] in (len(sampler), len(sampler.variants),
                                                             len(sampler.episodes)), name  # per sample, variant or episode
    per_sample = [s.index_nbytes() / len(s) for s in (small, large)]
    assert per_sample[1] < 80  # table 32 B, keys 4 B a row, ...
    assert per_sample[1] <= per_sample[0]  # does not grow with the cache
    assert large.index_nbytes() >= large.table.nbytes + sum(k.nbytes for k in large.keys)
    labels = large.labels(large.table, large.draw_variants(0))  # an epoch's, passed along, never kept
    assert labels.shape == (len(large), 4) and labels.nbytes / len(large) <= 16
