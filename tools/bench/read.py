"""P3: how fast the sequence sampler streams a cache larger than a few GB off the disk, against a plain
sequential read of the same files.

Two sampler figures: the sampler alone, whose batches hold the tokens as stored (fp16), and the sampler
with every batch converted to float32 on the device, as the training step does (P3 is the first).

The cache is written by cache.store with random fp16 tokens of the backbone's geometry (the values do
not matter to reading: tokens are stored uncompressed). Both reads start from a dropped page cache
when the machine allows it (root on Linux); otherwise the result says "page cache warm".

A first sampler epoch runs on its own: it fills the sampler's buffers from fresh memory, which the later
epochs of a training run reuse (cache/buffers.py), so it is slower; it is reported apart. Then rounds
alternate a plain read and sampler epochs; each round's ratio counts, and the median round is P3.
"""
import math
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cache.sampler import SamplerSettings, SequenceSampler
from data.profiles import load_profile
from extract_features.models import backbone_config, preprocess_settings
from extract_features.preprocess import patch_grid
from tools.bench.data import whole_episodes, write_recordings, write_token_cache
from tools.bench.machine import drop_page_cache, synchronizer

PROFILE = "gta5"
FPS = 80.0
READ_BUFFER = 16 << 20


@dataclass
class ReadBench:
    backbone: str  # decides the token geometry (channels)
    gb: float = 3.0  # size of the patch arrays
    episodes: int = 4
    block_rows: int = 256  # stage 1's default
    rounds: int = 1  # plain and sampler alternate; the best of each counts


def plain_read(files: list[Path]) -> int:
    """Read every file from start to end in large pieces; returns the bytes read."""
    buffer = bytearray(READ_BUFFER)
    view, total = memoryview(buffer), 0
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(view):
                total += n
    return total


def sampler_read_efficiency(s: ReadBench, device: torch.device, work: Path, log=print) -> dict:
    profile = load_profile(PROFILE)
    h, w, _ = profile.frame_shape
    grid = patch_grid(h, w, preprocess_settings(backbone_config(s.backbone), profile.preprocess))
    channels = backbone_config(s.backbone).embed_dim
    frame_bytes = grid[0] * grid[1] * channels * 2
    per_episode = math.ceil(s.gb * 1e9 / frame_bytes / s.episodes / s.block_rows) * s.block_rows
    root, path = work / "p3-recordings", work / "p3-cache"
    try:
        log(f"  writing a {per_episode * s.episodes * frame_bytes / 1e9:.1f} GB cache ({s.episodes} episodes of "
            f"{per_episode} frames, {grid[0]}x{grid[1]}x{channels} fp16)")
        # the sampler reads only keys and timestamps of the recordings: tiny frames keep them small
        recordings = write_recordings(root, s.episodes, per_episode, FPS, (8, 8, 3), PROFILE)
        cache = write_token_cache(path, recordings, grid, channels, block_rows=s.block_rows)
        sampler = SequenceSampler(cache, whole_episodes(cache), SamplerSettings(mode="stream"), device=device)
        files = sorted(f for ep in cache.episodes() for f in (path / "episodes" / ep.id / "clean" / "patch" / "c").rglob("*")
                       if f.is_file())
        total = sum(f.stat().st_size for f in files)
        sync = synchronizer(device)
        cold = drop_page_cache()
        first_s, samples = timed_epoch(sampler, sync, to_float32=False)  # fills the buffer pool
        plain_s, sampler_s, float_s = [], [], []
        for _ in range(s.rounds):
            cold &= drop_page_cache()
            start = time.perf_counter()
            plain_read(files)
            plain_s.append(time.perf_counter() - start)
            cold &= drop_page_cache()
            sampler_s.append(timed_epoch(sampler, sync, to_float32=False)[0])
            cold &= drop_page_cache()
            float_s.append(timed_epoch(sampler, sync, to_float32=True)[0])
    finally:
        shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    # the disk's speed drifts from one second to the next: each round's sampler read is set against the
    # plain read just before it, and the median round counts
    efficiency = statistics.median(p / x for p, x in zip(plain_s, sampler_s))
    efficiency_float = statistics.median(p / x for p, x in zip(plain_s, float_s))
    plain_rate, sampler_rate = total / statistics.median(plain_s), total / statistics.median(sampler_s)
    float_rate, first_rate = total / statistics.median(float_s), total / first_s
    log(f"  sampler {sampler_rate / 1e9:.2f} GB/s (fp16 batches; first epoch {first_rate / 1e9:.2f}), "
        f"{float_rate / 1e9:.2f} GB/s with float32 conversion on {device.type}; plain read {plain_rate / 1e9:.2f} GB/s"
        f" (medians) -> {efficiency:.2f}{'' if cold else ' (page cache warm: could not drop it)'}")
    return {"backbone_geometry": s.backbone, "cache_gb": total / 1e9, "frames": per_episode * s.episodes,
            "samples": samples, "block_rows": s.block_rows, "batch": sampler.s.batch_size,
            "buffer_blocks": sampler.s.buffer_blocks, "read_ahead": sampler.s.read_ahead, "rounds": s.rounds,
            "page_cache": "dropped" if cold else "warm", "batch_dtype": "float16 (as stored)",
            "sampler_samples_per_s": samples / statistics.median(sampler_s),
            "sampler_bytes_per_s": sampler_rate, "plain_bytes_per_s": plain_rate,
            "plain_bytes_per_s_each_round": [total / x for x in plain_s],
            "sampler_bytes_per_s_each_round": [total / x for x in sampler_s],
            "efficiency": efficiency, "goal": 0.8,
            "sampler_first_epoch_bytes_per_s": first_rate, "efficiency_first_epoch": first_rate / plain_rate,
            "sampler_float32_bytes_per_s": float_rate, "efficiency_float32": efficiency_float}


def timed_epoch(sampler: SequenceSampler, sync, to_float32: bool) -> tuple[float, int]:
    """Seconds for one shuffled epoch, and its samples; to_float32: each batch's tokens are converted
    to float32 on the device, as the training step does."""
    start, samples = time.perf_counter(), 0
    for batch in sampler.epoch(0, shuffle=True):
        if to_float32:
            batch.float_tokens()
        samples += len(batch.keys)
    sync()
    return time.perf_counter() - start, samples
