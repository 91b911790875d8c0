"""Stage 1: run the frozen backbone once over every recorded frame and variant, into the feature cache.

Three stages overlap: a reader thread (recording -> augmentation -> uint8 batch), the backbone on the
main thread, and a writer thread (cache). Work is committed block by block, so a killed run restarts
where it stopped and ends with the same bytes as an uninterrupted one.
"""
import queue
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cache.reduce import Projection, Reduction, reduce_tokens
from cache.store import CachedEpisode, CacheSpec, FeatureCache, episode_id
from data.augment import apply_variant
from data.episode import Episode
from data.errors import UserError
from data.index import EpisodeInfo, index_episodes
from data.profiles import GameProfile, load_profile
from extract_features.backbone import FeatureExtractor, load_backbone, pick_device, precision_name
from extract_features.preprocess import PreprocessSettings, patch_grid


@dataclass(frozen=True)
class ExtractSettings:
    recordings: list[Path]
    cache: Path
    backbone: str = "dinov2_vitb14_reg"
    weights: str = "official"
    profile: str | None = None  # None: the profile the episodes were recorded with
    reduction: Reduction = field(default_factory=Reduction)
    variants: tuple[str, ...] | None = None  # None: every variant of the profile's augmentation spec
    augment_seed: int = 0
    block_rows: int = 256
    batch_size: int = 64  # backbone batch; blocks are cut into batches of this size
    shard: tuple[int, int] = (1, 1)  # (K, N): this process extracts episodes K, K+N, K+2N, ...
    device: str = "auto"
    bf16: bool | None = None  # None: where it is fast (backbone.fast_bf16: CUDA, CPUs with AVX512-BF16/AMX)
    compile: bool = False
    refresh: bool = False  # re-extract recordings that changed since extraction
    kinds: tuple[str, ...] | None = None
    progress: bool = True


@dataclass
class _Work:
    episode: CachedEpisode
    recording: Episode
    block: int
    variants: list[str]


def extract(settings: ExtractSettings, log=print) -> FeatureCache:
    device = pick_device(settings.device)
    all_episodes = index_episodes(settings.recordings, kinds=list(settings.kinds) if settings.kinds else None)
    if not all_episodes:
        raise UserError(f"no episodes in {', '.join(map(str, settings.recordings))}")
    profile = _profile(settings, all_episodes)
    k, n = settings.shard
    mine = [e for i, e in enumerate(all_episodes) if i % n == k - 1]

    backbone = load_backbone(settings.backbone, settings.weights, device=device)
    log(f"backbone {backbone.name}: {backbone.weights_label}")
    prep = PreprocessSettings(mode=profile.preprocess)
    h, w, _ = profile.frame_shape
    extractor = FeatureExtractor(backbone, prep, bf16=settings.bf16, compile=settings.compile)
    variants = _variants(profile, settings.variants)

    spec = CacheSpec(backbone=backbone.name, weights_digest=backbone.weights_digest,
                     weights_label=backbone.weights_label, weights_source=settings.weights, preprocess=_asdict(prep),
                     precision=precision_name(extractor.bf16),
                     augment=profile.augment.subset(variants).text(), augment_seed=settings.augment_seed,
                     reduction=settings.reduction.describe(), block_rows=settings.block_rows,
                     grid=patch_grid(h, w, prep), channels=backbone.config.embed_dim,
                     registers=backbone.config.num_registers)
    projection = None
    if settings.reduction.pca_dim and not settings.cache.exists():
        projection = _fit_pca(all_episodes, extractor, settings, log)
    cache = FeatureCache.create_or_open(settings.cache, spec, projection)
    if settings.reduction.pca_dim and cache.projection is None:
        raise UserError(f"{settings.cache}: has no PCA but --pca was asked; use another --cache directory")

    work = _plan(cache, mine, variants, settings)
    total = sum((stop - start) * len(item.variants) for item in work
                for start, stop in [item.episode.block_range(item.block)])
    log(f"{len(mine)} episodes ({len(all_episodes)} in all), variants {', '.join(variants)}: "
        f"{total} frames to extract into {settings.cache}")
    if total:
        _run(work, profile, extractor, cache, settings, total)
    return cache


def _profile(settings: ExtractSettings, episodes: list[EpisodeInfo]) -> GameProfile:
    names = {e.profile for e in episodes if e.profile}
    if settings.profile is None and len(names) > 1:
        raise UserError(f"recordings mix game profiles {sorted(names)}; extract them into separate caches")
    profile = load_profile(settings.profile or (names.pop() if names else "gta5"))
    shapes = {Episode(e.path).frame_shape for e in episodes}
    if shapes != {profile.frame_shape}:
        raise UserError(f"recordings have frames {sorted(shapes)}, profile {profile.name} stores "
                        f"{profile.frame_shape}; pass the right --profile")
    return profile


def _variants(profile: GameProfile, wanted: tuple[str, ...] | None) -> list[str]:
    names = [v.name for v in profile.augment.variants]
    if wanted is None:
        return names
    unknown = [v for v in wanted if v not in names]
    if unknown:
        raise UserError(f"unknown variant(s) {', '.join(unknown)}; profile {profile.name} has {', '.join(names)}")
    return [v for v in names if v in wanted]


def _asdict(settings) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()}


def cache_rows(ep: Episode, fps: float | None) -> np.ndarray:
    """Recording rows that get cached: after the stuck padding, at the cache frame rate."""
    first = ep.pad_frames
    if first >= len(ep):
        return np.zeros(0, dtype=np.int64)
    if fps is None or fps >= ep.fps:
        return np.arange(first, len(ep), dtype=np.int64)
    t = ep.t[first:]
    ticks = np.arange(t[0], t[-1] + 1e-9, 1.0 / fps)
    return np.unique(np.searchsorted(t, ticks - 1e-9)) + first


def _fit_pca(episodes: list[EpisodeInfo], extractor, settings: ExtractSettings, log) -> Projection:
    """PCA of patch tokens of clean frames spread evenly over all recordings (the same for every shard)."""
    lengths = np.array([e.n_frames for e in episodes])
    picks = np.linspace(0, lengths.sum() - 1, num=min(settings.reduction.pca_frames, int(lengths.sum()))).astype(int)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    frames = []
    for pick in picks:
        i = int(np.searchsorted(starts, pick, side="right") - 1)
        frames.append(Episode(episodes[i].path).frames[int(pick - starts[i])])
    tokens = []
    for start in range(0, len(frames), settings.batch_size):
        batch = torch.from_numpy(np.stack(frames[start:start + settings.batch_size]))
        tokens.append(extractor(batch).patch.float().cpu().numpy())
    tokens = np.concatenate(tokens)
    projection = Projection.fit(tokens, settings.reduction.pca_dim)
    log(f"PCA {tokens.shape[-1]} -> {settings.reduction.pca_dim} channels fitted on {len(frames)} frames, "
        f"keeps {projection.explained(tokens) * 100:.1f}% of the variance")
    return projection


def _plan(cache: FeatureCache, episodes: list[EpisodeInfo], variants: list[str], settings: ExtractSettings) -> list[_Work]:
    work, changed = [], []
    for info in episodes:
        rec = Episode(info.path)
        eid = episode_id(info.path, settings.recordings)
        cached, digest = cache.episode(eid), rec.digest()
        if cached is not None and (cached.digest != digest or cached.variants != variants):
            if not settings.refresh:
                changed.append(eid)
                continue
            cache.remove_episode(eid)
            cached = None
        if cached is None:
            cache.remove_episode(eid)  # a half-made group from a killed run
            cached = cache.add_episode(eid, info.path.resolve(), digest, rec.kind, cache_rows(rec, settings.reduction.fps), variants)
        done = {v: cached.done(v) for v in variants}
        for block in range(cached.n_blocks):
            todo = [v for v in variants if not done[v][block]]
            if todo:
                work.append(_Work(cached, rec, block, todo))
    if changed:
        raise UserError(f"{settings.cache}: recording(s) changed since extraction: {', '.join(changed[:3])}"
                        f"{' ...' if len(changed) > 3 else ''}; rerun with --refresh to re-extract them")
    return work


def _run(work: list[_Work], profile: GameProfile, extractor, cache: FeatureCache, settings: ExtractSettings,
         total: int) -> None:
    inbox: queue.Queue = queue.Queue(maxsize=4)
    outbox: queue.Queue = queue.Queue(maxsize=4)
    failure: list[BaseException] = []
    halt = threading.Event()
    pin = extractor.device.type == "cuda"

    def read() -> None:
        try:
            for item in work:
                if halt.is_set():
                    break
                start, stop = item.episode.block_range(item.block)
                rows = item.episode.rows[start:stop]
                frames, keys, _ = item.recording.read(int(rows[0]), int(rows[-1]) + 1)
                frames, keys = frames[rows - rows[0]], keys[rows - rows[0]]
                for variant in item.variants:
                    spec = profile.augment.variant(variant)
                    out, _ = apply_variant(frames, keys, spec, profile, seed=settings.augment_seed,
                                           episode=item.episode.id, block=item.block)
                    batch = torch.from_numpy(np.ascontiguousarray(out))
                    inbox.put((item, variant, batch.pin_memory() if pin else batch))
        except BaseException as e:
            failure.append(e)
        finally:
            inbox.put(None)

    def write() -> None:
        try:
            while (job := outbox.get()) is not None:
                item, variant, arrays = job
                item.episode.write_block(variant, item.block, arrays)
        except BaseException as e:
            failure.append(e)
            while outbox.get() is not None:  # keep draining so the main thread never blocks
                pass

    threads = [threading.Thread(target=read, daemon=True), threading.Thread(target=write, daemon=True)]
    for t in threads:
        t.start()
    bar = tqdm(total=total, unit="frame", desc="extracting", disable=not settings.progress, file=sys.stderr)
    try:
        while (job := inbox.get()) is not None:
            item, variant, frames = job
            parts = [extractor(frames[i:i + settings.batch_size]) for i in range(0, len(frames), settings.batch_size)]
            patch = torch.cat([p.patch for p in parts])
            arrays = reduce_tokens(patch, cache.reduction, cache.projection)
            arrays["cls"] = torch.cat([p.cls for p in parts]).half().cpu().numpy()
            if cache.spec["registers"]:
                arrays["registers"] = torch.cat([p.registers for p in parts]).half().cpu().numpy()
            outbox.put((item, variant, arrays))
            bar.update(len(frames))
            if failure:
                break
    finally:
        halt.set()
        while threads[0].is_alive():  # unblock a reader waiting on a full inbox
            try:
                inbox.get(timeout=0.1)
            except queue.Empty:
                pass
        outbox.put(None)
        threads[1].join()
        bar.close()
    if failure:
        raise failure[0]
