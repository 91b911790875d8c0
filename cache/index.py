"""The sample index: every valid sample of some cached episodes, built by a pure function from plain arrays
(as diffusion_policy's create_indices): no cache handle, no state kept between calls.

A row of the index is (episode, last input row, label row, same block), int64, 32 bytes per sample. A
sample's inputs are `seq_len` cache rows `stride` apart ending at `last`; its label is the recording's keys
at the first recorded frame at or after `label_shift` seconds past the last input frame (labels come from
the recording at its full rate, never from the cache). No sample crosses a segment of the train/val split,
and none uses stuck padding, which the cache does not hold. A correction's lead-up (`context_frames`, the
agent driving before the player took over) is input only: no label row lies in it. `same block` is 1 where
every input lies in one cache block, which one augmentation transform covers.
"""
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from data.errors import UserError

EPISODE, LAST, LABEL, SAME_BLOCK = range(4)  # the index's columns


@dataclass(frozen=True)
class EpisodeRows:
    """What the index needs to know of one cached episode."""
    rows: np.ndarray  # (cache rows,) the recording row of each cache row
    t: np.ndarray  # (recorded frames,) the recording's timestamps in seconds
    block_rows: int  # cache rows per block
    segments: tuple[tuple[int, int], ...]  # recording rows [start, stop) samples may use, one pair per segment
    context_frames: int = 0  # the recording's first frames are inputs only, never labels


def stride_rows(cache_fps: float, stride_s: float, seq_len: int) -> int:
    """The stride in cache rows; refuses a stride the cache frame rate cannot express."""
    if seq_len == 1:
        return 1
    rows = stride_s * cache_fps
    if round(rows) < 1 or abs(rows - round(rows)) > 0.25:  # measured frame rates are never exact
        raise UserError(f"sequence stride {stride_s} s is not a whole number of cache frames at "
                        f"{cache_fps:.3g} fps; choose a multiple of {1 / cache_fps:.4g} s")
    return int(round(rows))


def build_index(episodes: Sequence[EpisodeRows], seq_len: int, stride_s: float,
                label_shift_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(index (N, 4) int64 of every valid sample, strides (episodes,) int64 in cache rows)."""
    tables, strides = [], []
    for number, episode in enumerate(episodes):
        table, stride = episode_samples(number, episode, seq_len, stride_s, label_shift_s)
        tables.append(table)
        strides.append(stride)
    table = np.concatenate(tables) if tables else np.zeros((0, 4), np.int64)
    return table, np.array(strides, dtype=np.int64)


def episode_samples(number: int, ep: EpisodeRows, seq_len: int, stride_s: float,
                    label_shift_s: float) -> tuple[np.ndarray, int]:
    """(index rows of every valid sample of one episode, its stride in cache rows)."""
    rows, t = ep.rows, ep.t
    if len(rows) < 2 and seq_len > 1:  # no sequence fits (all stuck padding, or one frame)
        return np.zeros((0, 4), np.int64), 1
    cache_fps = (len(rows) - 1) / (t[rows[-1]] - t[rows[0]]) if len(rows) > 1 else 1.0
    stride = stride_rows(cache_fps, stride_s, seq_len)
    span = (seq_len - 1) * stride
    last = np.arange(span, len(rows))
    first = last - span
    label = np.searchsorted(t, t[rows[last]] + label_shift_s - 1e-9)
    ok = (label < len(t)) & (label >= ep.context_frames)
    in_segment = np.zeros(len(last), dtype=bool)
    for start, stop in ep.segments:
        in_segment |= (rows[first] >= start) & (label < stop) & (rows[last] < stop)
    ok &= in_segment
    same_block = first // ep.block_rows == last // ep.block_rows
    out = np.stack([np.full(len(last), number), last, label, same_block], axis=1)
    return out[ok].astype(np.int64), stride


def input_rows(table: np.ndarray, strides: np.ndarray, seq_len: int) -> np.ndarray:
    """(N, seq_len) cache rows of each sample's inputs, oldest first."""
    stride = np.asarray(strides)[table[:, EPISODE]]
    return table[:, LAST:LAST + 1] - stride[:, None] * np.arange(seq_len - 1, -1, -1)[None, :]


def block_of(table: np.ndarray, block_rows: np.ndarray) -> np.ndarray:
    """(N,) the cache block each sample's last input lies in."""
    return table[:, LAST] // np.asarray(block_rows)[table[:, EPISODE]]
