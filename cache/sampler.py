"""Sequences of cached tokens with their labels, for stage 2.

One index table holds every valid sample: (episode, last input row, label row). A sample's inputs are
`seq_len` cache rows `stride` apart ending at `last`; its label is the recording's keys at the first
recorded frame at or after `label_shift` seconds past the last input frame (labels come from the
recording at its full rate, never from the cache). No sample crosses a segment of the train/val split,
and none uses stuck padding, which the cache does not hold. A correction's lead-up (`context_frames`,
the agent driving before the player took over) is input only: no label row lies in it.

kind_weights weight each sample's loss by its episode's kind (e.g. corrections counted 3x); a batch
carries them in Batch.weights.

Two reading modes give the same samples:
  ram     every needed array of the cache in memory (or GPU memory), gathered by index;
  stream  contiguous blocks read in one call each, every sample of a block formed, shuffled through a
          buffer of several blocks: for caches larger than memory. Per-sample zarr reads are far too slow.
          A background thread reads the next blocks while the current ones are gathered into batches.
Each sample's augmentation variant is drawn per epoch from (seed, epoch), so both modes agree.

Batches hold the tokens as the cache stores them (fp16, or int8 with per-token scales); the training step
restores float32 on its device with Batch.float_tokens().
"""
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from cache.buffers import empty_tensor
from cache.reduce import restore_tokens
from cache.store import LAST, CachedEpisode, FeatureCache, layer_arrays
from data.augment import AugmentSpec, variant_keys
from data.episode import Episode
from data.errors import UserError, require
from data.split import Segment

CLEAN = "clean"
MAX_SECONDS = 10.0  # longest --stride and --label-shift: beyond it a sequence or a prediction says nothing of driving
T = TypeVar("T")


@dataclass(frozen=True)
class SamplerSettings:
    seq_len: int = 3
    stride_s: float = 0.25  # time between sequence frames
    label_shift_s: float = 0.0  # predict the keys this long after the last frame (the loop's latency)
    tokens: str = "patches"  # patches, cls or both: which arrays are read
    layers: tuple[int, ...] = (LAST,)  # blocks whose patch tokens are read (LAST = -1, or blocks the cache
    #                                    stores with extract_features --layers), concatenated on the channel axis
    variant_weights: tuple[tuple[str, float], ...] | None = None  # None: every cached variant equally
    kind_weights: tuple[tuple[str, float], ...] = ()  # loss weight per episode kind; kinds not named weigh 1
    batch_size: int = 64
    mode: str = "ram"  # ram or stream; train_head also takes auto (ram when the cache fits in free memory)
    buffer_blocks: int = 8  # stream mode: reads whose samples are mixed in each batch (held in memory at once)
    blocks_per_read: int = 4  # stream mode: consecutive blocks read in one go
    read_ahead: int = 2  # stream mode: reads done in a background thread ahead of use (0: none). Each holds a
    #                      read's rows in memory beside the buffer's; 8 (a whole buffer) was slower on 2 busy cores
    seed: int = 0

    def __post_init__(self):
        """Refuses a bad option before any cache is read (messages name train_head's flags)."""
        require(self.seq_len >= 1, "--seq-len", self.seq_len, "at least 1 frame")
        require(0 < self.stride_s <= MAX_SECONDS, "--stride", self.stride_s,
                f"a positive number of seconds between sequence frames (at most {MAX_SECONDS:g})")
        require(0 <= self.label_shift_s <= MAX_SECONDS, "--label-shift", self.label_shift_s,
                f"between 0 and {MAX_SECONDS:g} seconds (the drive loop's latency)")
        require(self.batch_size >= 1, "--batch-size", self.batch_size, "at least 1 sequence")
        require(self.seed >= 0, "--seed", self.seed, ">= 0")


@dataclass
class Batch:
    """Sequences of tokens in the cache's stored dtype, on the sampler's device. float_tokens() makes
    what a head takes; the training step calls it, where the conversion costs least (nearly nothing on
    a GPU), and the sampler moves half the bytes or less."""

    stored: dict[str, torch.Tensor]  # 'patch' (B, T, P, C) fp16 or int8, 'scale' (B, T, P) fp16 with int8,
    #                                  'cls' (B, T, C) fp16; only the arrays that settings.tokens reads
    keys: torch.Tensor  # (B, 4) float32 labels
    ids: np.ndarray  # (B, 4) int64: episode, last row, label row, variant index (for tests and replay)
    weights: torch.Tensor | None = None  # (B,) float32 loss weight of each sample (its episode's kind weight)
    layers: tuple[int, ...] = (LAST,)  # the blocks of the patch tokens, in channel order

    def float_tokens(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(patch (B, T, P, C · layers), cls (B, T, C)) in float32 on the batch's device, None where not
        read. Patches stay PCA-projected when the cache holds them so."""
        stored, patches = self.stored, []
        for patch_name, scale_name in map(layer_arrays, self.layers):
            if patch_name in stored:
                patches.append(restore_tokens({"patch": stored[patch_name],
                                               **({"scale": stored[scale_name]} if scale_name in stored else {})}))
        patch = (patches[0] if len(patches) == 1 else torch.cat(patches, dim=-1)) if patches else None
        cls = stored["cls"].float() if "cls" in stored else None
        return patch, cls


def stride_rows(cache_fps: float, stride_s: float, seq_len: int) -> int:
    """The stride in cache rows; refuses a stride the cache frame rate cannot express."""
    if seq_len == 1:
        return 1
    rows = stride_s * cache_fps
    if round(rows) < 1 or abs(rows - round(rows)) > 0.25:  # measured frame rates are never exact
        raise UserError(f"sequence stride {stride_s} s is not a whole number of cache frames at "
                        f"{cache_fps:.3g} fps; choose a multiple of {1 / cache_fps:.4g} s")
    return int(round(rows))


class SequenceSampler:
    def __init__(self, cache: FeatureCache, segments: list[Segment], settings: SamplerSettings,
                 device: str | torch.device = "cpu", rank: int = 0, world: int = 1):
        self.cache, self.s, self.device = cache, settings, torch.device(device)
        missing = [layer for layer in settings.layers if layer != LAST and layer not in cache.layers]
        if missing or not settings.layers:
            raise UserError(f"--layers {','.join(map(str, missing or ['']))}: {cache.path} stores the last block"
                            + (f" and blocks {','.join(map(str, cache.layers))}" if cache.layers else " only")
                            + "; choose among those or extract with extract_features --layers")
        self.rank, self.world = rank, world
        by_path = {Path(ep.recording).resolve(): ep for ep in cache.episodes()}
        self.episodes: list[CachedEpisode] = []
        self.keys: list[np.ndarray] = []
        self.strides: list[int] = []  # per episode, in cache rows
        self.kinds: list[str] = []  # per episode
        tables = []
        for seg_path in dict.fromkeys(Path(s.path).resolve() for s in segments):
            ep = by_path.get(seg_path)
            if ep is None:
                raise UserError(f"{cache.path}: has no features for {seg_path}; run stage 1 on it first")
            if not ep.complete():
                raise UserError(f"{cache.path}: extraction of {ep.id} is unfinished; rerun python -m extract_features")
            if (problem := ep.damage()) is not None:
                raise UserError(f"{cache.path}: episode {ep.id} is damaged ({problem}); delete "
                                f"{cache.path / 'episodes' / ep.id} and rerun python -m extract_features")
            rec = Episode(ep.recording)
            self.episodes.append(ep)
            self.keys.append(rec.keys[:])
            self.kinds.append(rec.kind)
            mine = [s for s in segments if Path(s.path).resolve() == seg_path]
            tables.append(self._samples(len(self.episodes) - 1, ep, rec.t[:], mine, rec.context_frames))
        self.table = np.concatenate(tables) if tables else np.zeros((0, 4), np.int64)
        self.variants = self.episodes[0].variants if self.episodes else [CLEAN]
        weights = dict(settings.variant_weights or [(v, 1.0) for v in self.variants])
        unknown = set(weights) - set(self.variants)
        if unknown:
            raise UserError(f"variant weights name {sorted(unknown)}, the cache holds {self.variants}")
        self.weights = np.array([weights.get(v, 0.0) for v in self.variants], dtype=float)
        self.episode_weights = torch.tensor([dict(settings.kind_weights).get(k, 1.0) for k in self.kinds],
                                            dtype=torch.float32)
        self._ram: dict | None = None
        self.augment = AugmentSpec.from_text(cache.spec["augment"])  # parsed once, not per label

    def _samples(self, index: int, ep: CachedEpisode, t: np.ndarray, segments: list[Segment],
                 context_frames: int = 0) -> np.ndarray:
        """(episode, last, label, same_block) rows of every valid sample of one cached episode."""
        s = self.s
        rows = ep.rows
        if len(rows) < 2 and s.seq_len > 1:  # no sequence fits (all stuck padding, or one frame)
            self.strides.append(1)  # one per episode, as input_rows indexes them
            return np.zeros((0, 4), np.int64)
        cache_fps = (len(rows) - 1) / (t[rows[-1]] - t[rows[0]]) if len(rows) > 1 else 1.0
        self.strides.append(stride_rows(cache_fps, s.stride_s, s.seq_len))
        span = (s.seq_len - 1) * self.strides[-1]
        last = np.arange(span, len(rows))
        first = last - span
        label = np.searchsorted(t, t[rows[last]] + s.label_shift_s - 1e-9)
        ok = (label < len(t)) & (label >= context_frames)
        in_segment = np.zeros(len(last), dtype=bool)
        for seg in segments:
            in_segment |= (rows[first] >= seg.start) & (label < seg.stop) & (rows[last] < seg.stop)
        ok &= in_segment
        same_block = first // ep.block_rows == last // ep.block_rows
        out = np.stack([np.full(len(last), index), last, label, same_block], axis=1)
        return out[ok].astype(np.int64)

    def index_nbytes(self) -> int:
        """Bytes of the arrays the sampler holds besides the tokens (ram mode's copy of the cache): index
        table, keys, labels and blocks of the epoch. They are numpy arrays or tensors, a few dozen bytes a
        sample; nothing holds a Python object per row."""
        held = [v for k, v in vars(self).items() if k != "_ram"]
        held += [a for v in held if isinstance(v, list) for a in v]
        return sum(a.nbytes for a in held if isinstance(a, (np.ndarray, torch.Tensor)))

    def __len__(self) -> int:
        return len(self.table)

    # --- which variant each sample gets this epoch -------------------------------------------------
    def draw_variants(self, epoch: int) -> np.ndarray:
        """Variant index per sample: weighted among all variants where the sequence lies in one block
        (one augmentation transform), clean otherwise."""
        rng = np.random.default_rng([self.s.seed, epoch])
        p = self.weights / self.weights.sum()
        drawn = rng.choice(len(self.variants), size=len(self.table), p=p)
        clean = self.variants.index(CLEAN) if CLEAN in self.variants else 0
        return np.where(self.table[:, 3] == 1, drawn, clean)

    def labels(self, table: np.ndarray, variants: np.ndarray) -> np.ndarray:
        """Keys of each sample's label row, transformed as its variant transformed the pixels.

        Computed per (episode, block, variant): all samples there share one transform."""
        out = np.empty((len(table), 4), np.uint8)
        blocks = table[:, 1] // np.array([ep.block_rows for ep in self.episodes])[table[:, 0]]
        groups = np.stack([table[:, 0], blocks, variants], axis=1)
        unique, inverse, counts = np.unique(groups, axis=0, return_inverse=True, return_counts=True)
        by_group = np.split(np.argsort(inverse.ravel(), kind="stable"), np.cumsum(counts)[:-1])
        for (e, block, v), members in zip(unique, by_group):
            ep, keys = self.episodes[e], self.keys[e]
            out[members] = variant_keys(keys[table[members, 2]], keys[ep.rows[table[members, 1]]], self.variants[v],
                                        seed=self.cache.spec["augment_seed"], episode=ep.id, block=int(block),
                                        spec=self.augment)
        return out

    # --- epochs ------------------------------------------------------------------------------------
    def epoch(self, epoch: int = 0, shuffle: bool = True, drop_last: bool = False,
              variants: bool = True) -> Iterator[Batch]:
        """All samples once (this rank's share), in batches. variants=False: clean only (validation)."""
        chosen = self.draw_variants(epoch) if variants else np.full(len(self.table), self._clean_index())
        self._epoch_labels = torch.from_numpy(self.labels(self.table, chosen)).float()
        if self.s.mode == "ram":
            yield from self._ram_epoch(epoch, chosen, shuffle, drop_last)
        elif self.s.mode == "stream":
            yield from self._stream_epoch(epoch, chosen, shuffle, drop_last)
        else:
            raise UserError(f"sampler mode '{self.s.mode}' is unknown; use ram or stream")

    def _clean_index(self) -> int:
        return self.variants.index(CLEAN) if CLEAN in self.variants else 0

    def _names(self) -> tuple[str, ...]:
        names = ()
        if self.s.tokens in ("patches", "both"):
            names += tuple(name for layer in self.s.layers for name in layer_arrays(layer))
        if self.s.tokens in ("cls", "both"):
            names += ("cls",)
        return names

    def _ram_epoch(self, epoch, chosen, shuffle, drop_last) -> Iterator[Batch]:
        ram = self._load_ram()
        order = np.random.default_rng([self.s.seed, epoch, 1]).permutation(len(self.table)) if shuffle \
            else np.arange(len(self.table))
        order = order[self.rank::self.world]
        offsets = np.array([0] + [ep.n_rows for ep in self.episodes]).cumsum()
        for start in range(0, len(order), self.s.batch_size):
            pick = order[start:start + self.s.batch_size]
            if drop_last and len(pick) < self.s.batch_size:
                break
            table, var = self.table[pick], chosen[pick]
            rows = torch.as_tensor(offsets[table[:, 0]][:, None] + self.input_rows(table), device=self.device)
            v = torch.as_tensor(var, device=self.device)[:, None]
            yield self._batch({name: values[v, rows] for name, values in ram.items()}, pick, var)

    def _load_ram(self) -> dict[str, torch.Tensor]:
        """name -> (variants, all cached rows, ...) in the stored dtype, on the sampler's device."""
        if self._ram is None:
            self._ram = {}
            for name in self._names():
                per_variant = []
                for v in self.variants:
                    parts = [ep.read(v, names=(name,)) for ep in self.episodes]
                    if name in parts[0]:
                        per_variant.append(torch.from_numpy(np.concatenate([p[name] for p in parts])))
                if per_variant:
                    self._ram[name] = torch.stack(per_variant).to(self.device)
        return self._ram

    def ram_bytes(self) -> int:
        """What ram mode holds in memory: every array it reads, of every variant of this sampler's episodes."""
        return sum(ep.group[v][name].nbytes for ep in self.episodes for v in self.variants
                   for name in self._names() if name in ep.group[v])

    def input_rows(self, table: np.ndarray) -> np.ndarray:
        """(N, seq_len) cache rows of each sample's inputs, oldest first."""
        stride = np.array(self.strides)[table[:, 0]]
        return table[:, 1:2] - stride[:, None] * np.arange(self.s.seq_len - 1, -1, -1)[None, :]

    def _stream_epoch(self, epoch, chosen, shuffle, drop_last) -> Iterator[Batch]:
        """Runs of consecutive blocks, each read once per variant in one contiguous read, in the
        background ahead of use. Each run's samples are spread at random over the rounds of the next
        `buffer_blocks` runs read (one round per run), so a batch mixes samples of that many runs, the
        next run is read while a round's batches are gathered, and a run's rows are let go after its
        last round. Batches are gathered straight from the rows read (moved to the device first, so a
        GPU does the gathering); a round's last samples short of a batch go to the next round."""
        rng = np.random.default_rng([self.s.seed, epoch, 2])
        runs = self._runs()
        if shuffle:
            runs = [runs[i] for i in rng.permutation(len(runs))]
        runs = runs[self.rank::self.world]
        pool_runs = self.s.buffer_blocks if shuffle else 1
        reads = in_background((partial(self._read_run, *run, chosen) for run in runs), self.s.read_ahead)
        held: dict[int, dict] = {}  # run number -> its rows read, on the device
        due: dict[int, list] = {}  # round -> [(run number, sample ids, (n, T) rows within the run's rows)]
        carried = []  # (rows, ids, local) of the last round's samples short of a batch
        for n, (rows, ids, local) in enumerate(reads):
            held[n] = {k: v.to(self.device, non_blocking=True) for k, v in rows.items()}
            # rounds before the pool first fills are one round: the first batches mix as many runs as the rest
            when = np.maximum(n + (rng.integers(0, pool_runs, len(ids)) if shuffle else np.zeros(len(ids), int)),
                              pool_runs - 1)
            for r in np.unique(when):
                due.setdefault(int(r), []).append((n, ids[when == r], local[when == r]))
            rounds = sorted(due) if n == len(runs) - 1 else [n] if n >= pool_runs - 1 else []
            for r in rounds:
                final = r == rounds[-1] and n == len(runs) - 1
                carried = yield from self._round(carried, [(held[m], i, l) for m, i, l in due.pop(r, [])], chosen,
                                                 rng if shuffle else None, drop_last, final)
                held.pop(r - pool_runs + 1, None)

    def _round(self, carried, parts, chosen, rng, drop_last, final) -> Generator[Batch, None, list]:
        """Batches of the samples carried over from the last round, first, then those of `parts`
        [(rows, ids, local)], shuffled by rng unless None; returns the samples short of a batch, gathered
        into one part of their own, unless this is the final round."""
        parts = carried + parts
        if not parts:
            return []
        source = np.concatenate([np.full(len(p[1]), i) for i, p in enumerate(parts)])
        ids = np.concatenate([p[1] for p in parts])
        local = np.concatenate([p[2] for p in parts])
        first = len(carried[0][1]) if carried else 0
        order = np.concatenate([np.arange(first), first + (rng.permutation(len(ids) - first) if rng is not None
                                                           else np.arange(len(ids) - first))])
        end = len(order) if final else len(order) - len(order) % self.s.batch_size
        for start in range(0, end, self.s.batch_size):
            pick = order[start:start + self.s.batch_size]
            if drop_last and len(pick) < self.s.batch_size:
                break
            pick = pick[np.argsort(source[pick], kind="stable")]  # one gather per part
            yield self._batch(self._gather(parts, source[pick], local[pick]), ids[pick], chosen[ids[pick]])
        rest = order[end:]
        if not len(rest):
            return []
        rest = rest[np.argsort(source[rest], kind="stable")]
        return [(self._gather(parts, source[rest], local[rest], flat=True), ids[rest],
                 np.arange(len(rest) * self.s.seq_len).reshape(len(rest), self.s.seq_len))]

    def _gather(self, pool, source: np.ndarray, local: np.ndarray, flat: bool = False) -> dict[str, torch.Tensor]:
        """Sequences (n, T, ...) of pooled rows, written straight into one output tensor per array;
        `source` says which pooled run each sequence comes from (sorted: one gather per run)."""
        assert np.all(np.diff(source) >= 0), "sequences must be grouped by pooled run"
        out = {}
        bounds = np.searchsorted(source, np.arange(len(pool) + 1)) * local.shape[1]
        index = torch.as_tensor(local.reshape(-1), device=self.device)
        for name, first in pool[0][0].items():
            rows = empty_tensor((local.size, *first.shape[1:]), first.dtype, self.device)
            for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
                if b > a:
                    select_rows(pool[i][0][name], index[a:b], out=rows[a:b])
            out[name] = rows if flat else rows.view(*local.shape, *first.shape[1:])
        return out

    def _runs(self) -> list[tuple[int, int, int]]:
        """(episode, first block, last block) of up to `blocks_per_read` consecutive blocks with samples."""
        blocks_per_read = self.s.blocks_per_read
        block_of = self.table[:, 1] // np.array([ep.block_rows for ep in self.episodes])[self.table[:, 0]]
        runs = []
        for e in np.unique(self.table[:, 0]):
            blocks = np.unique(block_of[self.table[:, 0] == e])
            for i in range(0, len(blocks), blocks_per_read):
                runs.append((int(e), int(blocks[i]), int(blocks[min(i + blocks_per_read, len(blocks)) - 1])))
        self._block_of = block_of
        return runs

    def _read_run(self, e: int, first_block: int, last_block: int, chosen: np.ndarray):
        """The stored rows every sample ending in these blocks needs, one contiguous read per variant,
        and each sample's rows within them."""
        ep = self.episodes[e]
        ids = np.flatnonzero((self.table[:, 0] == e) & (self._block_of >= first_block) & (self._block_of <= last_block))
        inputs = self.input_rows(self.table[ids])
        hi = int(inputs.max()) + 1
        spans, local, offset = [], np.empty_like(inputs), 0
        for v in np.unique(chosen[ids]):
            mask = chosen[ids] == v
            v_lo = int(inputs[mask].min())
            spans.append((self.variants[v], v_lo, hi))
            local[mask] = inputs[mask] - v_lo + offset
            offset += hi - v_lo
        rows = {k: torch.from_numpy(v) for k, v in ep.read_spans(spans, self._names()).items()}
        return rows, ids, local

    def _batch(self, arrays: dict, ids: np.ndarray, var: np.ndarray) -> Batch:
        table = self.table[ids]
        keys = self._epoch_labels[ids].to(self.device)
        weights = self.episode_weights[torch.as_tensor(table[:, 0])].to(self.device)
        return Batch(stored=arrays, keys=keys, ids=np.stack([table[:, 0], table[:, 1], table[:, 2], var], axis=1),
                     weights=weights, layers=tuple(self.s.layers))


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
