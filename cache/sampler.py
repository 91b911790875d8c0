"""Sequences of cached tokens with their labels, for stage 2: the sampler puts together the parts in
cache/ that do the work.

  cache.index     the sample index, a pure function of the episodes' rows, timestamps and split segments
  cache.variants  which augmentation variant each sample gets per epoch, and its label under that variant
  cache.ram       ram reading: every needed array in memory (or GPU memory), gathered by index
  cache.stream    stream reading: contiguous blocks read in the background, shuffled through a buffer of
                  several reads: for caches larger than memory

kind_weights weight each sample's loss by its episode's kind (e.g. corrections counted 3x); a batch
carries them in Batch.weights. Both reading modes give the same samples: each sample's variant is drawn
per epoch from (seed, epoch).

Batches hold the tokens as the cache stores them (fp16, or int8 with per-token scales); the training step
restores float32 on its device with Batch.float_tokens().
"""
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from cache import index
from cache.index import EpisodeRows, build_index
from cache.ram import load_arrays, ram_batches, ram_bytes, ram_order
from cache.reduce import restore_tokens
from cache.store import LAST, CachedEpisode, FeatureCache, layer_arrays
from cache.stream import Batching, StreamReader, stream_batches
from cache.variants import CLEAN, clean_index, draw_variants, sample_labels
from data.augment import AugmentSpec
from data.episode import Episode
from data.errors import UserError, require
from data.split import Segment

MAX_SECONDS = 10.0  # longest --stride and --label-shift: beyond it a sequence or a prediction says nothing of driving


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


class SequenceSampler:
    """The samples of some segments of cached episodes, in batches per epoch: checks the cache, builds the
    index once, then each epoch draws variants and labels and reads by settings.mode."""

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
        self.kinds: list[str] = []  # per episode
        rows = []
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
            mine = tuple((s.start, s.stop) for s in segments if Path(s.path).resolve() == seg_path)
            rows.append(EpisodeRows(ep.rows, rec.t[:], ep.block_rows, mine, rec.context_frames))
        self.table, self.strides = build_index(rows, settings.seq_len, settings.stride_s, settings.label_shift_s)
        self.block_rows = np.array([ep.block_rows for ep in self.episodes], dtype=np.int64)
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

    def index_nbytes(self) -> int:
        """Bytes of the arrays the sampler holds besides the tokens (ram mode's copy of the cache): index
        table, keys, labels and blocks of the epoch. They are numpy arrays or tensors, a few dozen bytes a
        sample; nothing holds a Python object per row."""
        held = [v for k, v in vars(self).items() if k != "_ram"]
        held += [a for v in held if isinstance(v, list) for a in v]
        return sum(a.nbytes for a in held if isinstance(a, (np.ndarray, torch.Tensor)))

    def __len__(self) -> int:
        return len(self.table)

    def draw_variants(self, epoch: int) -> np.ndarray:
        """Variant index per sample in this epoch (cache.variants.draw_variants)."""
        return draw_variants(self.table, self.weights, self.variants, self.s.seed, epoch)

    def labels(self, table: np.ndarray, variants: np.ndarray) -> np.ndarray:
        """Keys of each sample's label row, transformed as its variant transformed the pixels."""
        return sample_labels(table, variants, keys=self.keys, rows=[ep.rows for ep in self.episodes],
                             episode_ids=[ep.id for ep in self.episodes], block_rows=self.block_rows,
                             variants=self.variants, spec=self.augment, augment_seed=self.cache.spec["augment_seed"])

    def input_rows(self, table: np.ndarray) -> np.ndarray:
        """(N, seq_len) cache rows of each sample's inputs, oldest first."""
        return index.input_rows(table, self.strides, self.s.seq_len)

    def epoch(self, epoch: int = 0, shuffle: bool = True, drop_last: bool = False,
              variants: bool = True) -> Iterator[Batch]:
        """All samples once (this rank's share), in batches. variants=False: clean only (validation)."""
        s = self.s
        chosen = self.draw_variants(epoch) if variants else np.full(len(self.table), clean_index(self.variants))
        make_batch = partial(self._batch, torch.from_numpy(self.labels(self.table, chosen)).float())
        if s.mode == "ram":
            order = ram_order(len(self.table), s.seed, epoch, shuffle, self.rank, self.world)
            yield from ram_batches(self._load_ram(), self.table, self.strides, s.seq_len,
                                   [ep.n_rows for ep in self.episodes], chosen, order, s.batch_size, drop_last,
                                   make_batch, self.device)
        elif s.mode == "stream":
            reader = StreamReader(self.episodes, self.table, self.strides, index.block_of(self.table, self.block_rows),
                                  s.seq_len, self.variants, self._names())
            yield from stream_batches(reader, Batching(make_batch, chosen, s.batch_size, s.seq_len, drop_last,
                                                       self.device),
                                      seed=s.seed, epoch=epoch, shuffle=shuffle, blocks_per_read=s.blocks_per_read,
                                      buffer_blocks=s.buffer_blocks, read_ahead=s.read_ahead, rank=self.rank,
                                      world=self.world)
        else:
            raise UserError(f"sampler mode '{s.mode}' is unknown; use ram or stream")

    def _names(self) -> tuple[str, ...]:
        names = ()
        if self.s.tokens in ("patches", "both"):
            names += tuple(name for layer in self.s.layers for name in layer_arrays(layer))
        if self.s.tokens in ("cls", "both"):
            names += ("cls",)
        return names

    def _load_ram(self) -> dict[str, torch.Tensor]:
        """name -> (variants, all cached rows, ...) in the stored dtype, on the sampler's device; loaded once."""
        if self._ram is None:
            self._ram = load_arrays(self.episodes, self.variants, self._names(), self.device)
        return self._ram

    def ram_bytes(self) -> int:
        """What ram mode holds in memory: every array it reads, of every variant of this sampler's episodes."""
        return ram_bytes(self.episodes, self.variants, self._names())

    def _batch(self, labels: torch.Tensor, arrays: dict, ids: np.ndarray, var: np.ndarray) -> Batch:
        """The samples `ids` of the index, their tokens `arrays`, variants `var`, and `labels` of the epoch."""
        table = self.table[ids]
        keys = labels[ids].to(self.device)
        weights = self.episode_weights[torch.as_tensor(table[:, 0])].to(self.device)
        return Batch(stored=arrays, keys=keys, ids=np.stack([table[:, 0], table[:, 1], table[:, 2], var], axis=1),
                     weights=weights, layers=tuple(self.s.layers))
