"""P1: training samples/s from the feature cache against the seed's way of training, side by side.

Cache: SequenceSampler (ram mode) → float32 tokens → head → BCE → AdamW step, the steps of train_head/train.py.
Seed:  the 3 frames of every sample through the frozen backbone inside the step (no grad), then the
       same head and step. Its frames are handed over already decoded in memory, which flatters it.
Both sides: the same head, batch and precision (bf16 autocast where the device is fast at it, else fp32),
the same sample order.
"""
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cache.sampler import SamplerSettings, SequenceSampler
from data.episode import Episode
from data.profiles import load_profile
from extract_features.device import fast_bf16, precision_name
from extract_features.extractor import FeatureExtractor
from extract_features.loader import load_backbone
from extract_features.models import backbone_config, preprocess_settings
from extract_features.preprocess import patch_grid
from tools.bench.data import whole_episodes, write_recordings, write_token_cache
from tools.bench.machine import synchronizer
from train_head.heads import HeadSettings, build_head
from train_head.optim import OptimSettings, make_optimizer
from train_head.train import train_step

PROFILE = "gta5"
FPS = 80.0


@dataclass
class TrainBench:
    backbone: str
    batch: int = 24
    cache_steps: int = 20  # timed steps per round
    seed_steps: int = 1
    rounds: int = 2  # the two sides alternate; the best round of each counts
    bf16: bool | None = None  # None: bf16 where it is fast (fast_bf16), else fp32
    episodes: int = 2
    frames: int = 200  # per episode, 80 fps: 160 sequences of 3 frames 0.25 s apart per episode


def training_speedup(s: TrainBench, device: torch.device, work: Path, log=print) -> dict:
    profile = load_profile(PROFILE)
    prep = preprocess_settings(backbone_config(s.backbone), profile.preprocess)
    h, w, _ = profile.frame_shape
    grid = patch_grid(h, w, prep)
    backbone = load_backbone(s.backbone, "random", device=device, progress=False)
    channels = backbone.config.embed_dim
    recordings = write_recordings(work / "p1-recordings", s.episodes, s.frames, FPS, profile.frame_shape, PROFILE)
    cache = write_token_cache(work / "p1-cache", recordings, grid, channels)
    sampler = SequenceSampler(cache, whole_episodes(cache), SamplerSettings(batch_size=s.batch, mode="ram"),
                              device=device)
    frames = [Episode(ep.recording).frames[:] for ep in sampler.episodes]
    bf16 = fast_bf16(device) if s.bf16 is None else s.bf16
    extractor = FeatureExtractor(backbone, prep, bf16=bf16)
    head = build_head(HeadSettings(grid=grid, channels=channels, cls_channels=channels, seq_len=3)).to(device)
    optim = OptimSettings(max_steps=10 ** 6)
    optimizer = make_optimizer(head, optim, device.type)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    sync = synchronizer(device)
    step = 0

    def batches():
        epoch = 0
        while True:
            yield from sampler.epoch(epoch, shuffle=True, drop_last=True)
            epoch += 1

    stream = batches()

    def cache_steps(n: int) -> float:
        nonlocal step
        sync()
        start = time.perf_counter()
        for _ in range(n):
            batch = next(stream)
            patch, _ = batch.float_tokens()  # the conversion from the stored fp16 is part of the timed step
            train_step(head, optimizer, optim, step, patch, None, batch.keys, autocast)
            step += 1
        sync()
        return time.perf_counter() - start

    def seed_steps(n: int) -> float:
        nonlocal step
        # the seed's data loader: frames and labels of the same samples, ready in memory (not timed)
        work_items = []
        for _ in range(n):
            batch = next(stream)
            rows = sampler.input_rows(batch.ids[:, :2])
            pixels = np.stack([frames[e][sampler.episodes[e].rows[r]] for e, r in zip(batch.ids[:, 0], rows)])
            work_items.append((pixels.reshape(-1, *pixels.shape[2:]), batch.keys))
        sync()
        start = time.perf_counter()
        for pixels, keys in work_items:
            # inference tensors cannot enter autograd; clone() makes the features ordinary tensors
            patch = extractor(pixels).patch.clone().reshape(len(keys), 3, -1, channels)
            train_step(head, optimizer, optim, step, patch, None, keys, autocast)
            step += 1
        sync()
        return time.perf_counter() - start

    cache_steps(2)  # warm-up: loads the cache into memory, builds kernels
    seed_steps(1)
    cache_s, seed_s = [], []
    for _ in range(s.rounds):
        cache_s.append(cache_steps(s.cache_steps) / s.cache_steps)
        seed_s.append(seed_steps(s.seed_steps) / s.seed_steps)
    cache_rate, seed_rate = s.batch / min(cache_s), s.batch / min(seed_s)
    log(f"  from cache {cache_rate:.1f} samples/s, seed's way {seed_rate:.2f} samples/s ({precision_name(bf16)})")
    return {"backbone": s.backbone, "batch": s.batch, "precision": precision_name(bf16), "mode": "ram",
            "cache_steps": s.cache_steps, "seed_steps": s.seed_steps, "rounds": s.rounds,
            "cache_samples_per_s": cache_rate, "seed_samples_per_s": seed_rate, "speedup": cache_rate / seed_rate,
            "goal": 50.0 if device.type == "cuda" else 35.0}
