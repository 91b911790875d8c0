"""Stream reading, for caches larger than memory: contiguous runs of blocks read in one call each (per-sample
zarr reads are far too slow), in a background thread ahead of use, every sample of a run formed and shuffled
through a buffer of several runs.

Everything a read or a batch needs is passed in: a StreamReader is fixed at construction and the epoch's
state (runs held, rounds due, samples carried over) lives in stream_batches' own variables.
"""
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import TypeVar

import numpy as np
import torch

from cache.buffers import empty_tensor
from cache.index import EPISODE, input_rows
from cache.ram import MakeBatch
from cache.store import CachedEpisode

T = TypeVar("T")
Run = tuple[int, int, int]  # (episode, first block, last block)
Read = tuple[dict[str, torch.Tensor], np.ndarray, np.ndarray]  # (rows read, sample ids, (n, T) rows within them)


@dataclass(frozen=True)
class StreamReader:
    """Reads, for the samples of an index, the stored rows of runs of consecutive blocks."""
    episodes: Sequence[CachedEpisode]
    table: np.ndarray  # the index (cache.index)
    strides: np.ndarray  # per episode, in cache rows
    block_of: np.ndarray  # per sample, the block of its last input (cache.index.block_of)
    seq_len: int
    variants: Sequence[str]
    names: tuple[str, ...]  # the arrays read

    def runs(self, blocks_per_read: int) -> list[Run]:
        """Up to `blocks_per_read` consecutive blocks with samples, in episode and block order."""
        runs = []
        for e in np.unique(self.table[:, EPISODE]):
            blocks = np.unique(self.block_of[self.table[:, EPISODE] == e])
            for i in range(0, len(blocks), blocks_per_read):
                runs.append((int(e), int(blocks[i]), int(blocks[min(i + blocks_per_read, len(blocks)) - 1])))
        return runs

    def read(self, run: Run, chosen: np.ndarray) -> Read:
        """The stored rows every sample ending in the run's blocks needs, one contiguous read per variant
        `chosen` for them, and each sample's rows within them."""
        e, first_block, last_block = run
        ids = np.flatnonzero((self.table[:, EPISODE] == e) & (self.block_of >= first_block)
                             & (self.block_of <= last_block))
        inputs = input_rows(self.table[ids], self.strides, self.seq_len)
        hi = int(inputs.max()) + 1
        spans, local, offset = [], np.empty_like(inputs), 0
        for v in np.unique(chosen[ids]):
            mask = chosen[ids] == v
            v_lo = int(inputs[mask].min())
            spans.append((self.variants[v], v_lo, hi))
            local[mask] = inputs[mask] - v_lo + offset
            offset += hi - v_lo
        rows = {k: torch.from_numpy(v) for k, v in self.episodes[e].read_spans(spans, self.names).items()}
        return rows, ids, local


@dataclass(frozen=True)
class Batching:
    """How a round's samples become batches."""
    make_batch: MakeBatch  # (arrays, ids, variants) -> batch
    chosen: np.ndarray  # the epoch's variant index per sample
    batch_size: int
    seq_len: int
    drop_last: bool
    device: torch.device


def stream_batches(reader: StreamReader, batching: Batching, *, seed: int, epoch: int, shuffle: bool,
                   blocks_per_read: int, buffer_blocks: int, read_ahead: int, rank: int = 0,
                   world: int = 1) -> Iterator:
    """Runs of consecutive blocks, each read once per variant in one contiguous read, in the background
    ahead of use. Each run's samples are spread at random over the rounds of the next `buffer_blocks` runs
    read (one round per run), so a batch mixes samples of that many runs, the next run is read while a
    round's batches are gathered, and a run's rows are let go after its last round. Batches are gathered
    straight from the rows read (moved to the device first, so a GPU does the gathering); a round's last
    samples short of a batch go to the next round."""
    rng = np.random.default_rng([seed, epoch, 2])
    runs = reader.runs(blocks_per_read)
    if shuffle:
        runs = [runs[i] for i in rng.permutation(len(runs))]
    runs = runs[rank::world]
    pool_runs = buffer_blocks if shuffle else 1
    reads = in_background((partial(reader.read, run, batching.chosen) for run in runs), read_ahead)
    held: dict[int, dict] = {}  # run number -> its rows read, on the device
    due: dict[int, list] = {}  # round -> [(run number, sample ids, (n, T) rows within the run's rows)]
    carried = []  # (rows, ids, local) of the last round's samples short of a batch
    for n, (rows, ids, local) in enumerate(reads):
        held[n] = {k: v.to(batching.device, non_blocking=True) for k, v in rows.items()}
        # rounds before the pool first fills are one round: the first batches mix as many runs as the rest
        when = np.maximum(n + (rng.integers(0, pool_runs, len(ids)) if shuffle else np.zeros(len(ids), int)),
                          pool_runs - 1)
        for r in np.unique(when):
            due.setdefault(int(r), []).append((n, ids[when == r], local[when == r]))
        rounds = sorted(due) if n == len(runs) - 1 else [n] if n >= pool_runs - 1 else []
        for r in rounds:
            final = r == rounds[-1] and n == len(runs) - 1
            carried = yield from batch_round(carried, [(held[m], i, l) for m, i, l in due.pop(r, [])], batching,
                                             rng if shuffle else None, final)
            held.pop(r - pool_runs + 1, None)


def batch_round(carried: list, parts: list, batching: Batching, rng: np.random.Generator | None,
                final: bool) -> Generator[object, None, list]:
    """Batches of the samples carried over from the last round, first, then those of `parts`
    [(rows, ids, local)], shuffled by rng unless None; returns the samples short of a batch, gathered
    into one part of their own, unless this is the final round."""
    b = batching
    parts = carried + parts
    if not parts:
        return []
    source = np.concatenate([np.full(len(p[1]), i) for i, p in enumerate(parts)])
    ids = np.concatenate([p[1] for p in parts])
    local = np.concatenate([p[2] for p in parts])
    first = len(carried[0][1]) if carried else 0
    order = np.concatenate([np.arange(first), first + (rng.permutation(len(ids) - first) if rng is not None
                                                       else np.arange(len(ids) - first))])
    end = len(order) if final else len(order) - len(order) % b.batch_size
    for start in range(0, end, b.batch_size):
        pick = order[start:start + b.batch_size]
        if b.drop_last and len(pick) < b.batch_size:
            break
        pick = pick[np.argsort(source[pick], kind="stable")]  # one gather per part
        yield b.make_batch(gather(parts, source[pick], local[pick], b.device), ids[pick], b.chosen[ids[pick]])
    rest = order[end:]
    if not len(rest):
        return []
    rest = rest[np.argsort(source[rest], kind="stable")]
    return [(gather(parts, source[rest], local[rest], b.device, flat=True), ids[rest],
             np.arange(len(rest) * b.seq_len).reshape(len(rest), b.seq_len))]


def gather(pool, source: np.ndarray, local: np.ndarray, device: torch.device,
           flat: bool = False) -> dict[str, torch.Tensor]:
    """Sequences (n, T, ...) of pooled rows, written straight into one output tensor per array;
    `source` says which pooled run each sequence comes from (sorted: one gather per run)."""
    assert np.all(np.diff(source) >= 0), "sequences must be grouped by pooled run"
    out = {}
    bounds = np.searchsorted(source, np.arange(len(pool) + 1)) * local.shape[1]
    index = torch.as_tensor(local.reshape(-1), device=device)
    for name, first in pool[0][0].items():
        rows = empty_tensor((local.size, *first.shape[1:]), first.dtype, device)
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            if b > a:
                select_rows(pool[i][0][name], index[a:b], out=rows[a:b])
        out[name] = rows if flat else rows.view(*local.shape, *first.shape[1:])
    return out


def select_rows(source: torch.Tensor, index: torch.Tensor, out: torch.Tensor) -> None:
    """out[:] = source[index] along axis 0. In host memory by numpy, on one thread: the copy is bound by
    memory, and torch's worker threads, competing with the reading thread for the cores, stalled it for
    seconds at a time (measured on a 2-core machine)."""
    if out.device.type == "cpu":
        # mode "clip": the default "raise" copies through a buffer; the indices are in range by construction
        np.take(source.numpy(), index.numpy(), axis=0, out=out.numpy(), mode="clip")
    else:
        torch.index_select(source, 0, index, out=out)


def in_background(calls: Iterable[Callable[[], T]], ahead: int) -> Iterator[T]:
    """The results of `calls` in their order, each call started up to `ahead` results before it is
    taken, in one background thread; ahead=0 makes each call when its result is taken."""
    calls = iter(calls)
    if ahead < 1:
        yield from (call() for call in calls)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="sampler-read") as worker:
        pending = deque(worker.submit(call) for call in islice(calls, ahead))
        try:
            while pending:
                result = pending.popleft().result()
                pending.extend(worker.submit(call) for call in islice(calls, 1))
                yield result
        finally:  # the caller stopped early: start nothing more
            for future in pending:
                future.cancel()
