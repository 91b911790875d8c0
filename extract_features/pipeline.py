"""Stage 1: run the frozen backbone once over every recorded frame and variant, into the feature cache.

Three stages overlap: a reader thread (recording -> augmentation -> uint8 batch), the backbone on the
main thread (and on settings.workers - 1 helper threads), and a writer thread (cache). Work is committed
block by block, so a killed run restarts where it stopped and ends with the same bytes as an
uninterrupted one.
"""
import queue
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from cache.reduce import Projection, reduce_tokens
from cache.store import LAST, CachedEpisode, CacheSpec, FeatureCache, episode_id, layer_arrays
from data.augment import apply_variant
from data.episode import Episode
from data.errors import UserError, disk_faults
from data.index import EpisodeInfo
from data.paths import check_output_folder
from data.progress import progress
from data.profiles import GameProfile
from extract_features.device import pick_device, precision_name
from extract_features.estimate import disk_free, require_space
from extract_features.selection import ExtractSettings, cache_rows, select_episodes, variant_names
from extract_features.extractor import FeatureExtractor
from extract_features.loader import load_backbone
from extract_features.models import RAW_PATCHES, backbone_config, preprocess_settings
from extract_features.preprocess import patch_grid


@dataclass
class _Work:
    episode: CachedEpisode
    recording: Episode
    block: int
    variants: list[str]


def extract(settings: ExtractSettings, log=print, free_disk=None,
            selected: tuple[list[EpisodeInfo], GameProfile] | None = None) -> FeatureCache:
    """free_disk(path) -> free bytes there (default: the disk's); a cache that will not fit is refused.
    selected: select_episodes' result when the caller has it already (its warnings are not repeated)."""
    check_output_folder(settings.cache, "--cache")
    device = pick_device(settings.device)
    all_episodes, profile = selected or select_episodes(settings, log)
    if settings.hud == "distort":  # augmentation then treats the minimap like any other pixels
        profile = replace(profile, hud={})
    require_space(settings, all_episodes, free_disk or disk_free)
    k, n = settings.shard
    mine = [e for i, e in enumerate(all_episodes) if i % n == k - 1]

    layers = check_layers(settings.layers, settings.backbone)
    backbone = load_backbone(settings.backbone, settings.weights, device=device)
    log(f"backbone {backbone.name}: {backbone.weights_label}")
    prep = preprocess_settings(backbone.config, profile.preprocess)
    h, w, _ = profile.frame_shape
    extractor = FeatureExtractor(backbone, prep, bf16=settings.bf16, compile=settings.compile, layers=layers,
                                 int8=settings.int8_backbone)
    variants = variant_names(profile, settings.variants)

    spec = CacheSpec(backbone=backbone.name, weights_digest=backbone.weights_digest,
                     weights_label=backbone.weights_label, weights_source=settings.weights, preprocess=_asdict(prep),
                     precision=precision_name(extractor.bf16, extractor.int8),
                     augment=profile.augment.subset(variants).text(), augment_seed=settings.augment_seed,
                     reduction=settings.reduction.describe(), block_rows=settings.block_rows,
                     grid=patch_grid(h, w, prep), channels=backbone.config.embed_dim,
                     registers=backbone.config.num_registers, layers=layers, hud=settings.hud)
    projections = None
    if settings.reduction.pca_dim and not settings.cache.exists():
        projections = _fit_pca(all_episodes, extractor, settings, log)
    cache = FeatureCache.create_or_open(settings.cache, spec, projections)
    if settings.reduction.pca_dim and cache.projection is None:
        raise UserError(f"{settings.cache}: has no PCA but --pca was asked; use another --cache directory")

    with disk_faults(settings.cache, kept="the blocks written so far are kept: rerun the same command to continue"):
        work = _plan(cache, mine, variants, settings)
        total = sum((stop - start) * len(item.variants) for item in work
                    for start, stop in [item.episode.block_range(item.block)])
        log(f"{len(mine)} episodes ({len(all_episodes)} in all), variants {', '.join(variants)}: "
            f"{total} frames to extract into {settings.cache}")
        if total:
            with _threads_per_worker(device, settings.workers):
                damaged = _run(work, profile, extractor, cache, settings, total)
            for damaged_id, problem in damaged.items():
                cache.remove_episode(damaged_id)  # half-extracted: the rerun after a fix starts it afresh
                log(f"warning: skipped {problem}")
    return cache


@contextmanager
def _threads_per_worker(device: torch.device, workers: int):
    """On a CPU, the torch threads shared out among the backbone workers, so that together they use as many
    cores as one would (more threads than cores make every operation wait for the slowest)."""
    threads = torch.get_num_threads()
    if device.type == "cpu" and workers > 1:
        torch.set_num_threads(max(1, threads // workers))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def check_layers(layers: tuple[int, ...], backbone: str) -> tuple[int, ...]:
    """--layers: distinct earlier blocks of the backbone, in increasing order."""
    depth = backbone_config(backbone).depth
    if layers and backbone == RAW_PATCHES:
        raise UserError(f"--layers: {backbone} has no blocks; leave --layers out")
    wrong = [n for n in layers if not 0 <= n < depth - 1]
    if wrong:
        raise UserError(f"--layers {','.join(map(str, wrong))}: {backbone} has blocks 0..{depth - 1}, and the last "
                        f"({depth - 1}) is always stored; choose earlier blocks between 0 and {depth - 2}")
    return tuple(sorted(set(layers)))


def _asdict(settings) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()}


def _fit_pca(episodes: list[EpisodeInfo], extractor, settings: ExtractSettings, log) -> dict[int, Projection]:
    """PCA of patch tokens of clean frames spread evenly over all recordings (the same for every shard),
    one per stored block: LAST and each of extractor.layers."""
    lengths = np.array([e.n_frames for e in episodes])
    picks = np.linspace(0, lengths.sum() - 1, num=min(settings.reduction.pca_frames, int(lengths.sum()))).astype(int)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    frames = []
    for pick in progress(picks, desc="PCA: reading frames", unit="frame", enabled=settings.progress):
        i = int(np.searchsorted(starts, pick, side="right") - 1)
        frames.append(Episode(episodes[i].path).frames[int(pick - starts[i])])
    stored = (LAST, *extractor.layers)
    tokens = {layer: [] for layer in stored}
    with progress(total=len(frames), desc="PCA: encoding frames", unit="frame", enabled=settings.progress) as bar:
        for start in range(0, len(frames), settings.batch_size):
            out = extractor(torch.from_numpy(np.stack(frames[start:start + settings.batch_size])))
            for layer, patch in zip(stored, (out.patch, *out.layers)):
                tokens[layer].append(patch.float().cpu().numpy())
            bar.update(min(settings.batch_size, len(frames) - start))
    projections = {}
    for layer in progress(stored, desc="PCA: fitting", unit="block", enabled=settings.progress):
        x = np.concatenate(tokens[layer])
        projections[layer] = Projection.fit(x, settings.reduction.pca_dim)
        log(f"PCA {x.shape[-1]} -> {settings.reduction.pca_dim} channels "
            f"{'' if layer == LAST else f'of block {layer} '}fitted on {len(frames)} frames, "
            f"keeps {projections[layer].explained(x) * 100:.1f}% of the variance")
    return projections


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
         total: int) -> dict[str, str]:
    """Extract every work item; returns {episode id: problem} of the recordings found damaged on reading
    (a chunk that does not decode), whose remaining work is skipped (refused with settings.strict).
    settings.workers threads run the backbone, each on its own items (the main thread is one of them)."""
    damaged: dict[str, str] = {}
    workers = settings.workers
    inbox: queue.Queue = queue.Queue(maxsize=4 * workers)
    outbox: queue.Queue = queue.Queue(maxsize=4 * workers)
    failure: list[BaseException] = []
    halt = threading.Event()
    pin = extractor.device.type == "cuda"

    def read() -> None:
        try:
            for item in work:
                if halt.is_set():
                    break
                if item.episode.id in damaged:
                    continue
                start, stop = item.episode.block_range(item.block)
                rows = item.episode.rows[start:stop]
                try:
                    frames, keys, _ = item.recording.read(int(rows[0]), int(rows[-1]) + 1)
                except UserError as e:
                    if settings.strict:
                        raise
                    damaged[item.episode.id] = str(e)
                    continue
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
            for _ in range(workers):
                inbox.put(None)

    def write() -> None:
        try:
            while (job := outbox.get()) is not None:
                item, variant, arrays = job
                item.episode.write_block(variant, item.block, arrays)
        except BaseException as e:
            failure.append(e)
            while outbox.get() is not None:  # keep draining so the compute threads never block
                pass

    bar = progress(total=total, unit="frame", desc="extracting", enabled=settings.progress)
    counted = threading.Lock()

    def compute() -> None:
        while not halt.is_set() and not failure and (job := inbox.get()) is not None:
            item, variant, frames = job
            outbox.put((item, variant, _encode(frames, extractor, cache, settings.batch_size)))
            with counted:
                bar.update(len(frames))

    def helper() -> None:
        try:
            compute()
        except BaseException as e:
            failure.append(e)

    reader, writer = threading.Thread(target=read, daemon=True), threading.Thread(target=write, daemon=True)
    helpers = [threading.Thread(target=helper, daemon=True) for _ in range(workers - 1)]
    for t in (reader, writer, *helpers):
        t.start()
    try:
        compute()  # on the main thread, so that Ctrl+C stops it between two operations
        for t in helpers:
            t.join()
    finally:
        halt.set()
        while reader.is_alive():  # unblock a reader waiting on a full inbox
            try:
                inbox.get(timeout=0.1)
            except queue.Empty:
                pass
        try:
            while True:
                inbox.get_nowait()
        except queue.Empty:
            pass
        for _ in helpers:  # wakes a helper waiting for work that will not come
            inbox.put(None)
        for t in helpers:
            t.join()
        outbox.put(None)
        writer.join()
        bar.close()
    if failure:
        raise failure[0]
    return damaged


def _encode(frames: torch.Tensor, extractor, cache: FeatureCache, batch_size: int) -> dict[str, np.ndarray]:
    """One block of one variant through the backbone, in batches: the arrays the cache stores for it."""
    parts = [extractor(frames[i:i + batch_size]) for i in range(0, len(frames), batch_size)]
    arrays = {}
    for i, layer in enumerate((LAST, *cache.layers)):
        patch = torch.cat([p.patch if layer == LAST else p.layers[i - 1] for p in parts])
        reduced = reduce_tokens(patch, cache.reduction, cache.projections.get(layer))
        patch_name, scale_name = layer_arrays(layer)
        arrays[patch_name] = reduced["patch"]
        if "scale" in reduced:
            arrays[scale_name] = reduced["scale"]
    arrays["cls"] = torch.cat([p.cls for p in parts]).half().cpu().numpy()
    if cache.spec["registers"]:
        arrays["registers"] = torch.cat([p.registers for p in parts]).half().cpu().numpy()
    return arrays
