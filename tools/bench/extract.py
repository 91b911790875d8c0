"""Figures 2 and 6, both measured on real stage-1 runs (extract_features.pipeline.extract) over real
recordings: its end-to-end speed against the bare backbone, and the bytes per frame it stores."""
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cache.reduce import Reduction
from data.episode import Episode
from data.profiles import load_profile
from extract_features.device import precision_name
from extract_features.extractor import FeatureExtractor
from extract_features.loader import load_backbone
from extract_features.models import backbone_config, preprocess_settings
from extract_features.pipeline import ExtractSettings, extract
from extract_features.preprocess import patch_grid
from tools.bench.data import array_bytes, write_recordings
from tools.bench.machine import synchronizer

PROFILE = "gta5"  # 180x240 frames, 13x18 patches: the seed's geometry
FPS = 80.0


@dataclass
class Stage1Bench:
    backbone: str
    episodes: int = 2
    frames: int = 32  # per episode
    batch: int = 16  # backbone batch, the same on both sides
    block_rows: int = 32
    rounds: int = 2  # bare and pipeline alternate; the best of each counts
    bf16: bool | None = None  # the pipeline's default: where it is fast (fast_bf16)


@dataclass
class CacheBytesBench:
    backbones: tuple[str, ...]
    frames: int = 4  # one block of this many frames, so no chunk is padded
    pca_dim: int = 64


def stage1_efficiency(s: Stage1Bench, device: torch.device, work: Path, log=print) -> dict:
    """frames/s of extract() (clean variant, fp16) ÷ frames/s of the bare FeatureExtractor forward on the
    same frames already in memory. The extraction run is timed from its "frames to extract" line (after
    backbone loading and planning) to its return; the whole call is reported too."""
    profile = load_profile(PROFILE)
    root = work / "stage1-recordings"
    paths = write_recordings(root, s.episodes, s.frames, FPS, profile.frame_shape, PROFILE)
    frames = np.concatenate([Episode(p).frames[:] for p in paths])
    n = len(frames)
    backbone = load_backbone(s.backbone, "random", device=device, progress=False)
    extractor = FeatureExtractor(backbone, preprocess_settings(backbone.config, profile.preprocess), bf16=s.bf16)
    sync = synchronizer(device)

    def bare() -> float:
        sync()
        start = time.perf_counter()
        for i in range(0, n, s.batch):
            extractor(frames[i:i + s.batch])
        sync()
        return time.perf_counter() - start

    def pipeline(cache: Path) -> tuple[float, float]:
        stamps: list[tuple[float, str]] = []
        settings = ExtractSettings(recordings=[root], cache=cache, backbone=s.backbone, weights="random",
                                   variants=("clean",), reduction=Reduction(dtype="fp16"), block_rows=s.block_rows,
                                   batch_size=s.batch, device=str(device), bf16=s.bf16, progress=False)
        start = time.perf_counter()
        extract(settings, log=lambda message: stamps.append((time.perf_counter(), message)))
        end = time.perf_counter()
        shutil.rmtree(cache)
        run_start = [t for t, message in stamps if "frames to extract" in message]
        if not run_start:
            raise RuntimeError("extract() no longer logs its 'frames to extract' line; update tools/bench/extract.py")
        return end - run_start[-1], end - start

    extractor(frames[:s.batch])  # warm-up: kernels and memory for this batch shape
    bare_s, run_s, call_s = [], [], []
    for r in range(s.rounds):
        bare_s.append(bare())
        run, call = pipeline(work / f"stage1-cache-{r}")
        run_s.append(run)
        call_s.append(call)
    shutil.rmtree(root)
    backbone_fps, pipeline_fps, call_fps = n / min(bare_s), n / min(run_s), n / min(call_s)
    log(f"  extract() {pipeline_fps:.2f} frames/s, bare backbone {backbone_fps:.2f} frames/s")
    return {"backbone": s.backbone, "precision": precision_name(extractor.bf16), "batch": s.batch,
            "frames": n, "block_rows": s.block_rows, "rounds": s.rounds,
            "pipeline_frames_per_s": pipeline_fps, "backbone_frames_per_s": backbone_fps,
            "efficiency": pipeline_fps / backbone_fps,
            "pipeline_with_setup_frames_per_s": call_fps, "efficiency_with_setup": call_fps / backbone_fps,
            "goal": 0.90}


def cache_bytes_per_frame(s: CacheBytesBench, device: torch.device, work: Path, log=print) -> dict:
    """Bytes on disk of the token arrays extract() writes, per frame, for fp16, int8 and PCA."""
    profile = load_profile(PROFILE)
    root = work / "bytes-recordings"
    write_recordings(root, 1, s.frames, FPS, profile.frame_shape, PROFILE)
    h, w, _ = profile.frame_shape
    results = {}
    for name in s.backbones:
        pca_dim = min(s.pca_dim, backbone_config(name).embed_dim)  # tiny test backbones have fewer channels
        reductions = {"fp16": Reduction(dtype="fp16"), "int8": Reduction(dtype="int8"),
                      "pca": Reduction(dtype="fp16", pca_dim=pca_dim, pca_frames=s.frames)}
        per_reduction = {}
        for label, reduction in reductions.items():
            path = work / f"bytes-cache-{name}-{label}"
            settings = ExtractSettings(recordings=[root], cache=path, backbone=name, weights="random",
                                       variants=("clean",), reduction=reduction, block_rows=s.frames,
                                       batch_size=s.frames, device=str(device), progress=False)
            cache = extract(settings, log=lambda message: None)
            (episode,) = cache.episodes()
            variant = path / "episodes" / episode.id / "clean"
            arrays = {a.name: array_bytes(a) / episode.n_rows for a in sorted(variant.iterdir())
                      if a.is_dir() and a.name != "done"}
            per_reduction[label] = {"bytes_per_frame": sum(arrays.values()), "arrays": arrays}
            shutil.rmtree(path)
        results[name] = {"grid": list(patch_grid(h, w, preprocess_settings(backbone_config(name), profile.preprocess))),
                         "pca_dim": pca_dim, "source": "measured", "reductions": per_reduction}
        log(f"  {name}: " + ", ".join(f"{k} {v['bytes_per_frame'] / 1000:.1f} kB" for k, v in per_reduction.items()))
    shutil.rmtree(root)
    return {"frames": s.frames, "backbones": results}
