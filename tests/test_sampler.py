"""The sequence sampler: exact indices on a synthetic cache whose tokens encode their recording row."""
import hashlib
import threading
import weakref
from collections import Counter
from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import torch

from cache.reduce import dequantize_int8
from cache.sampler import SamplerSettings, SequenceSampler
from cache.stream import StreamReader, in_background
from data.episode import Episode
from data.errors import UserError
from data.split import Segment
from tests.conftest import synthetic_cache, write_episode


@pytest.fixture
def two_episodes(tmp_path):
    write_episode(tmp_path / "a.zarr", n=60, fps=20.0, shape=(8, 8, 3), seed=1)
    b = tmp_path / "b.zarr"
    write_episode(b, n=50, fps=20.0, shape=(8, 8, 3), kind="stuck", pad_frames=10, seed=2)
    return [tmp_path / "a.zarr", b]


def whole(paths):
    return [Segment(p, 0, len(Episode(p))) for p in paths]


def test_indices_stride_shift_padding_and_boundaries(tmp_path, two_episodes):
    cache = synthetic_cache(tmp_path, two_episodes)
    s = SamplerSettings(seq_len=3, stride_s=0.2, label_shift_s=0.15, batch_size=7, tokens="both",
                        variant_weights=(("clean", 1.0),))
    sampler = SequenceSampler(cache, whole(two_episodes), s)
    # cache at 10 fps: stride 0.2 s = 2 cache rows = 4 recording rows; shift 0.15 s = 3 recording rows
    seen = 0
    for batch in sampler.epoch(0, shuffle=True):
        patch, cls = batch.float_tokens()
        rows = patch[:, :, 0, 0].numpy()  # recording row of each input frame
        eps = cls[:, 0, 0].numpy()
        for i, (e, last, label, _) in enumerate(batch.ids):
            assert np.all(cls[i, :, 0].numpy() == e)  # one episode per sequence
            np.testing.assert_array_equal(np.diff(rows[i]), [4, 4])  # stride
            assert label == rows[i, -1] + 3  # label shift
            pad = Episode(two_episodes[e]).pad_frames
            assert rows[i, 0] >= pad and label < len(Episode(two_episodes[e]))
            keys = Episode(two_episodes[e]).keys[int(label)]
            np.testing.assert_array_equal(batch.keys[i].numpy(), keys)
        seen += len(batch.ids)
        assert set(eps) <= {0, 1}
    # a: cache rows 0..29 -> last in 4..29, label row 2*last+3 <= 59 -> last <= 28: 25 samples
    # b: cache rows 10,12..48 (20) -> last in 4..19, label 10+2*last+3 <= 49 -> last <= 18: 15
    assert seen == len(sampler) == 25 + 15


def test_segments_are_never_crossed(tmp_path, two_episodes):
    cache = synthetic_cache(tmp_path, two_episodes[:1])
    s = SamplerSettings(seq_len=2, stride_s=0.1, label_shift_s=0.0, variant_weights=(("clean", 1.0),))
    segs = [Segment(two_episodes[0], 0, 30), Segment(two_episodes[0], 30, 60)]
    left = SequenceSampler(cache, segs[:1], s)
    right = SequenceSampler(cache, segs[1:], s)
    for sampler, (lo, hi) in ((left, (0, 30)), (right, (30, 60))):
        for batch in sampler.epoch(0):
            rows = batch.float_tokens()[0][:, :, 0, 0].numpy()
            assert rows.min() >= lo and rows.max() < hi and batch.ids[:, 2].max() < hi
    assert len(left) + len(right) == 28  # 29 pairs in 30 cache rows, minus the one across row 30


def test_seq_len_one_and_stride_checked(tmp_path, two_episodes):
    cache = synthetic_cache(tmp_path, two_episodes)
    single = SequenceSampler(cache, whole(two_episodes), SamplerSettings(seq_len=1))
    assert len(single) == 30 + 20 and next(single.epoch(0)).stored["patch"].shape[1] == 1
    with pytest.raises(UserError, match="not a whole number of cache frames at 10 fps"):
        SequenceSampler(cache, whole(two_episodes), SamplerSettings(seq_len=3, stride_s=0.25))


def test_ram_and_stream_give_the_same_samples(tmp_path, two_episodes):
    cache = synthetic_cache(tmp_path, two_episodes)
    # one block per read and two reads per shuffle buffer: leftovers are carried across buffers
    base = SamplerSettings(seq_len=3, stride_s=0.2, label_shift_s=0.1, batch_size=5, buffer_blocks=2, seed=3,
                           blocks_per_read=1)

    def collect(mode):
        sampler = SequenceSampler(cache, whole(two_episodes), replace(base, mode=mode))
        out = Counter()
        for batch in sampler.epoch(epoch=1, shuffle=True):
            for ids, patch, keys in zip(batch.ids, batch.float_tokens()[0].numpy(), batch.keys.numpy()):
                out[(tuple(ids), tuple(patch[:, 0, 0]), tuple(keys))] += 1
        return out

    ram, stream = collect("ram"), collect("stream")
    assert ram == stream and sum(ram.values()) == 40
    variants = Counter(k[0][3] for k in ram)
    assert variants[0] > 0 and variants[1] > 0  # both variants drawn
    for (e, last, label, v), rows, keys in ram:
        if v == 1:  # augmented: all inputs in one block (one transform), pixels from that variant
            assert len({int(r - 1000) // 1 for r in rows}) == 3 and min(rows) >= 1000
            cache_rows = [(r - 1000 - (10 if e == 1 else 0)) // 2 for r in rows]
            assert len({cr // 8 for cr in cache_rows}) == 1
            flipped = Episode(two_episodes[e]).keys[int(label)][[0, 3, 2, 1]]  # a and d swapped
            assert keys == tuple(flipped.astype(np.float32))


def test_rank_shares_partition_an_epoch(tmp_path, two_episodes):
    cache = synthetic_cache(tmp_path, two_episodes)
    s = SamplerSettings(seq_len=2, stride_s=0.1, batch_size=4, mode="stream", buffer_blocks=1)
    ids = [set(map(tuple, np.concatenate([b.ids[:, :3] for b in
                                          SequenceSampler(cache, whole(two_episodes), s, rank=r, world=2).epoch(0)])))
           for r in (0, 1)]
    assert not ids[0] & ids[1]
    assert len(ids[0] | ids[1]) == len(SequenceSampler(cache, whole(two_episodes), s))


@pytest.mark.parametrize("pad_frames", [10, 9], ids=["all padding", "one cache row"])
def test_an_episode_too_short_for_a_sequence_is_skipped(tmp_path, two_episodes, pad_frames):
    """A recording that ends inside (or one frame after) its stuck padding holds no sequence; the
    episodes after it keep their own strides."""
    short = tmp_path / "short.zarr"
    write_episode(short, n=10, fps=20.0, shape=(8, 8, 3), kind="stuck", pad_frames=pad_frames, seed=3)
    paths = [two_episodes[0], short, two_episodes[1]]
    cache = synthetic_cache(tmp_path, paths, every=1)
    for mode in ("ram", "stream"):
        sampler = SequenceSampler(cache, whole(paths), SamplerSettings(seq_len=3, stride_s=0.1, batch_size=16,
                                                                       mode=mode, blocks_per_read=1))
        assert 1 not in set(sampler.table[:, 0]) and {0, 2} <= set(sampler.table[:, 0])
        ids = np.concatenate([b.ids for b in sampler.epoch(0, shuffle=False)])
        assert len(ids) == len(sampler)


@pytest.mark.parametrize("read_ahead", [1, 3, 8])
def test_reading_ahead_gives_exactly_the_batches_of_reading_in_place(tmp_path, two_episodes, read_ahead):
    cache = synthetic_cache(tmp_path, two_episodes, random_tokens=True)
    # one block per read, two reads per shuffle buffer: several buffers, leftovers carried across them
    base = SamplerSettings(seq_len=3, stride_s=0.2, batch_size=5, mode="stream", buffer_blocks=2, blocks_per_read=1,
                           tokens="both", seed=3)

    def batches(ahead):
        return list(SequenceSampler(cache, whole(two_episodes), replace(base, read_ahead=ahead)).epoch(1))

    in_place, ahead = batches(0), batches(read_ahead)
    assert len(in_place) == len(ahead) == 9  # 42 samples
    for a, b in zip(in_place, ahead):
        np.testing.assert_array_equal(a.ids, b.ids)
        assert torch.equal(a.keys, b.keys) and a.stored.keys() == b.stored.keys()
        assert all(torch.equal(a.stored[k], b.stored[k]) for k in a.stored)


def test_stream_mode_gathers_while_reading_and_lets_each_read_go_after_buffer_blocks_more(tmp_path, two_episodes,
                                                                                          monkeypatch):
    cache = synthetic_cache(tmp_path, two_episodes)
    s = SamplerSettings(seq_len=3, stride_s=0.2, batch_size=3, mode="stream", buffer_blocks=2, blocks_per_read=1,
                        read_ahead=0, seed=1)
    sampler = SequenceSampler(cache, whole(two_episodes), s)
    read_run, reads, run_of = StreamReader.read, [], {}

    def logged_read(*args):
        rows, ids, local = read_run(*args)
        run_of.update((int(i), len(reads)) for i in ids)
        reads.append(weakref.ref(rows["patch"]))
        return rows, ids, local

    monkeypatch.setattr(StreamReader, "read", logged_read)
    batches = []
    for batch in sampler.epoch(0):
        alive = {n for n, ref in enumerate(reads) if ref() is not None}
        batches.append((len(reads), alive, {run_of[i] for i in sampler_ids(sampler, batch)}))
    assert len(reads) >= 4 and sorted(run_of) == list(range(len(sampler)))
    # after the pool's first fill, every read is followed by batches before the next read
    assert {n for n, _, _ in batches} >= set(range(2, len(reads)))
    for n, alive, runs in batches:
        assert alive <= {n - 2, n - 1}  # a read's rows go once two reads after it have been read
        assert min(runs) >= n - 3  # its samples too (a round's last few go first in the next)
    assert sum(len(runs) > 1 for _, _, runs in batches) > len(batches) / 2  # batches mix runs


def sampler_ids(sampler, batch):
    """Each sample's row in the sampler's table."""
    table = {tuple(row): i for i, row in enumerate(sampler.table[:, :3].tolist())}
    return [table[tuple(row)] for row in batch.ids[:, :3].tolist()]


@pytest.mark.parametrize("mode", ["ram", "stream"])
@pytest.mark.parametrize("dtype", ["fp16", "int8"])
def test_batches_hold_the_stored_dtypes_and_restore_float32(tmp_path, two_episodes, mode, dtype):
    cache = synthetic_cache(tmp_path, two_episodes, random_tokens=True, dtype=dtype)
    s = SamplerSettings(seq_len=3, stride_s=0.2, batch_size=8, tokens="both", mode=mode)
    batch = next(SequenceSampler(cache, whole(two_episodes), s).epoch(0))
    stored = batch.stored
    if dtype == "int8":
        assert set(stored) == {"patch", "scale", "cls"} and stored["patch"].dtype == torch.int8
        assert stored["scale"].dtype == torch.float16 and stored["scale"].shape == (8, 3, 6)
    else:
        assert set(stored) == {"patch", "cls"} and stored["patch"].dtype == torch.float16
    assert stored["patch"].shape == (8, 3, 6, 4) and stored["cls"].dtype == torch.float16

    patch, cls = batch.float_tokens()
    assert patch.dtype == cls.dtype == torch.float32
    restored = dequantize_int8(stored["patch"], stored["scale"]) if dtype == "int8" else stored["patch"].float()
    assert torch.equal(patch, restored) and torch.equal(cls, stored["cls"].float())

    only_cls = next(SequenceSampler(cache, whole(two_episodes), replace(s, tokens="cls")).epoch(0))
    assert set(only_cls.stored) == {"cls"} and only_cls.float_tokens()[0] is None


def test_in_background_keeps_the_order_and_stops_when_closed():
    before = set(threading.enumerate())  # another test's unfinished reader may still be winding down
    started = []

    def square(i):
        started.append(i)
        if i == 6:
            raise ValueError("read failed")
        return i * i

    calls = [partial(square, i) for i in range(10)]
    assert list(in_background(calls[:6], ahead=3)) == [0, 1, 4, 9, 16, 25]
    with pytest.raises(ValueError, match="read failed"):  # an error in the background reaches the caller
        list(in_background(calls, ahead=2))

    started.clear()
    results = in_background(calls, ahead=3)
    assert next(results) == 0
    results.close()
    assert len(started) <= 4 and started == sorted(started)  # the result taken and at most 3 ahead
    assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("sampler-read")]


PINNED = {  # sha256 of every batch's ids, labels, weights and stored tokens, computed before cache/ was split
    "ram": "8bd0e1f3b0f133aa",
    "stream": "065fec7aa9765e12",
}


@pytest.mark.parametrize("mode", ["ram", "stream"])
def test_fixed_seed_batches_are_pinned(tmp_path, two_episodes, mode):
    """Same seeds, same batches in the same order, bit for bit: a refactor of the sampler must not move them."""
    cache = synthetic_cache(tmp_path, two_episodes, random_tokens=True, dtype="int8")
    s = SamplerSettings(seq_len=3, stride_s=0.2, label_shift_s=0.1, batch_size=5, tokens="both", mode=mode,
                        buffer_blocks=2, blocks_per_read=1, read_ahead=1, seed=3, kind_weights=(("stuck", 3.0),))
    sampler = SequenceSampler(cache, whole(two_episodes), s)
    digest = hashlib.sha256()
    for batches in (sampler.epoch(1), sampler.epoch(2, drop_last=True), sampler.epoch(0, shuffle=False, variants=False)):
        for batch in batches:
            digest.update(batch.ids.astype(np.int64).tobytes() + batch.keys.numpy().tobytes()
                          + batch.weights.numpy().tobytes())
            for name in sorted(batch.stored):
                digest.update(name.encode() + batch.stored[name].numpy().tobytes())
    assert digest.hexdigest()[:16] == PINNED[mode]
