"""The sample index as a pure function of plain arrays (cache.index)."""
import numpy as np
import pytest

from cache.index import EpisodeRows, block_of, build_index, input_rows
from data.errors import UserError


def every_other(n=60, fps=20.0, pad=0, **kw) -> EpisodeRows:
    """A recording of n frames cached every other frame after its padding (the cache at fps / 2)."""
    return EpisodeRows(rows=np.arange(pad, n, 2), t=np.arange(n) / fps, block_rows=8, segments=((0, n),), **kw)


def test_index_columns_stride_and_label_shift():
    table, strides = build_index([every_other()], seq_len=3, stride_s=0.2, label_shift_s=0.15)
    # cache at 10 fps: stride 0.2 s = 2 cache rows; shift 0.15 s = 3 recording rows past row 2 * last
    last = np.arange(4, 29)  # label 2 * last + 3 <= 59
    np.testing.assert_array_equal(table, np.stack([np.zeros_like(last), last, 2 * last + 3, last // 8 == (last - 4) // 8],
                                                  axis=1))
    np.testing.assert_array_equal(strides, [2])
    assert table.dtype == np.int64 and table.nbytes == 32 * len(table)  # numpy only, 32 bytes per sample
    np.testing.assert_array_equal(input_rows(table[:2], strides, 3), [[0, 2, 4], [1, 3, 5]])
    np.testing.assert_array_equal(block_of(table[[0, -1]], np.array([8])), [0, 3])


def test_index_is_a_pure_function_of_its_inputs():
    episodes = [every_other(), every_other(n=50, pad=10)]
    before = [ep.rows.copy() for ep in episodes]
    first = build_index(episodes, seq_len=3, stride_s=0.2, label_shift_s=0.1)
    again = build_index(episodes, seq_len=3, stride_s=0.2, label_shift_s=0.1)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    for ep, rows in zip(episodes, before):
        np.testing.assert_array_equal(ep.rows, rows)
    assert set(first[0][:, 0]) == {0, 1} and first[0][first[0][:, 0] == 1, 1].min() == 4


def test_segments_context_and_episodes_without_a_sequence():
    split = EpisodeRows(rows=np.arange(0, 60, 2), t=np.arange(60) / 20, block_rows=8, segments=((0, 30), (30, 60)))
    table, _ = build_index([split], seq_len=2, stride_s=0.1, label_shift_s=0.0)
    inputs = input_rows(table, np.array([1]), 2)
    rows = np.arange(0, 60, 2)[inputs]
    assert len(table) == 28 and not ((rows[:, 0] < 30) & (rows[:, 1] >= 30)).any()  # none crosses row 30
    lead_up, _ = build_index([every_other(context_frames=20)], seq_len=2, stride_s=0.1, label_shift_s=0.0)
    assert lead_up[:, 2].min() == 20  # a correction's lead-up is input only
    short = EpisodeRows(rows=np.array([9]), t=np.arange(10) / 20, block_rows=8, segments=((0, 10),))
    table, strides = build_index([short, every_other()], seq_len=3, stride_s=0.2, label_shift_s=0.0)
    assert set(table[:, 0]) == {1} and list(strides) == [1, 2]  # the episode after keeps its own number
    with pytest.raises(UserError, match="not a whole number of cache frames at 10 fps"):
        build_index([every_other()], seq_len=3, stride_s=0.25, label_shift_s=0.0)
