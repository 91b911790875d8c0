"""Scale: stream-mode training with the real head from a synthetic cache of the size our users have.

Two sizes by default: the seed's dataset (~490k frames at 80 fps) as the gta5 defaults of stage 1 cache
it (backbone, cache frame rate, variants, PCA/dtype: computed from ExtractSettings, so a change of the
defaults changes it), and one larger than this machine's memory. A size that does not fit on the disk
is skipped and said so. Per size:

- samples/s and one epoch's time of training (train_head's step, the default head and sampler settings,
  stream mode), and of the sampler alone;
- bytes/s the sampler reads against a plain sequential read of the same files (page cache dropped
  before each read where allowed);
- the peak resident memory of the training process (a child process, so it is its own), against the
  cache's size and the bound the sampler's buffers set;
- the sampler's index: bytes per sample of the arrays it holds (SequenceSampler.index_nbytes).

The cache holds random fp16 tokens of the default geometry (values do not matter to reading or to a
step's speed), clean variant only: the rows of every variant, one after the other, read like them.
"""
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from cache.sampler import SequenceSampler
from cache.store import FeatureCache
from data.errors import UserError
from data.profiles import load_profile
from extract_features.device import fast_bf16, precision_name
from extract_features.models import backbone_config
from extract_features.estimate import profile_reduction
from extract_features.pipeline import ExtractSettings
from extract_features.preprocess import PreprocessSettings, patch_grid
from tools.bench.data import whole_episodes, write_recordings, write_token_cache
from tools.bench.machine import drop_page_cache, synchronizer
from tools.bench.read import plain_read
from train_head.heads import build_head
from train_head.optim import make_optimizer
from train_head.train import TrainSettings, train_step

PROFILE = "gta5"
SEED_FRAMES = 490_000  # the seed's dataset: ~1.7 h at 80 fps (DESIGN.md, "Scale the defaults must serve")


@dataclass
class ScaleBench:
    sizes: tuple[str, ...] = ("seed", "ram")  # "seed", "ram" (1.25x this machine's memory) or GB, e.g. "3"
    episodes: int = 8
    block_rows: int = 256  # stage 1's default
    max_steps: int | None = None  # cap on the training steps of the epoch (None: the whole epoch)


@dataclass(frozen=True)
class Geometry:
    grid: tuple[int, int]
    channels: int  # stored channels of a patch token (the PCA's k, or the backbone's width)
    rows_per_frame: float  # cache rows per recorded frame: cache fps / 80 times the variants
    label: str

    @property
    def patch_bytes(self) -> int:  # what the sampler reads of a row: fp16 patch tokens
        return self.grid[0] * self.grid[1] * self.channels * 2

    @property
    def row_bytes(self) -> int:
        return self.patch_bytes + self.channels * 2  # fp16 patches + CLS


def default_geometry() -> Geometry:
    """What stage 1's defaults store per recorded gta5 frame."""
    d, profile = ExtractSettings(recordings=[], cache=Path()), load_profile(PROFILE)
    d = replace(d, reduction=profile_reduction(profile))  # the profile's [cache] defaults, as extraction uses them
    h, w, _ = profile.frame_shape
    grid = patch_grid(h, w, PreprocessSettings(mode=profile.preprocess))
    channels = d.reduction.pca_dim or backbone_config(d.backbone).embed_dim
    variants = len(d.variants) if d.variants is not None else len(profile.augment.variants)
    fps_share = min(1.0, d.reduction.fps / profile.fps) if d.reduction.fps else 1.0
    label = (f"{d.backbone}, {grid[0]}x{grid[1]}x{channels}, {variants} variant(s), "
             f"cache {fps_share * profile.fps:g} fps, stored as fp16 (defaults: {d.reduction.dtype}, PCA {d.reduction.pca_dim})")
    return Geometry(grid, channels, fps_share * variants, label)


def memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def size_bytes(size: str, geometry: Geometry) -> int:
    if size == "seed":
        return int(SEED_FRAMES * geometry.rows_per_frame * geometry.row_bytes)
    if size == "ram":
        return int(1.25 * memory_bytes())
    try:
        gb = float(size)
    except ValueError:
        gb = 0.0
    if not gb > 0:
        raise UserError(f"--scale-sizes {size}: give seed, ram or a positive number of GB")
    return int(gb * 1e9)


def buffer_bound(sampler_settings, block_rows: int, row_bytes: int) -> int:
    """Rows the stream sampler holds at most: its shuffle buffer, the reads ahead and the one in hand."""
    s = sampler_settings
    return (s.buffer_blocks + s.read_ahead + 1) * s.blocks_per_read * block_rows * row_bytes


def scale_figures(s: ScaleBench, device: torch.device, work: Path, log=print) -> dict:
    geometry = default_geometry()
    log(f"  geometry of the defaults: {geometry.label}: {geometry.row_bytes / 1e3:.1f} kB a row")
    results = {"geometry": geometry.label, "row_bytes": geometry.row_bytes, "memory_bytes": memory_bytes(),
               "device": str(device), "sizes": {}}
    for size in s.sizes:
        want = size_bytes(size, geometry)
        free = shutil.disk_usage(work).free
        if want > 0.9 * free:
            log(f"  {size}: {want / 1e9:.1f} GB cache skipped, {free / 1e9:.0f} GB free on {work}")
            results["sizes"][size] = {"cache_bytes": want, "skipped": f"needs {want / 1e9:.1f} GB, "
                                                                      f"{free / 1e9:.0f} GB free on the disk"}
            continue
        results["sizes"][size] = one_size(s, size, want, geometry, device, work / f"scale-{size}", log)
    return results


def one_size(s: ScaleBench, size: str, want: int, geometry: Geometry, device: torch.device, root: Path, log) -> dict:
    per_episode = max(1, math.ceil(want / geometry.patch_bytes / s.episodes / s.block_rows)) * s.block_rows
    rows = per_episode * s.episodes
    log(f"  {size}: writing a {rows * geometry.row_bytes / 1e9:.1f} GB cache ({s.episodes} episodes of {per_episode} rows)")
    try:
        recordings = write_recordings(root / "recordings", s.episodes, per_episode, 80.0, (8, 8, 3), PROFILE)
        cache = write_token_cache(root / "cache", recordings, geometry.grid, geometry.channels, s.block_rows)
        files = patch_files(cache.path)
        cold = drop_page_cache()
        start = time.perf_counter()
        read = plain_read(files)
        plain_s = time.perf_counter() - start
        cold &= drop_page_cache()
        child = run_child(cache.path, device, s.max_steps)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    bound = buffer_bound(TrainSettings(cache=Path(), out_dir=Path()).sampler, s.block_rows, geometry.row_bytes)
    out = {"cache_bytes": read, "rows": rows, "page_cache": "dropped" if cold else "warm",
           "plain_bytes_per_s": read / plain_s, "buffer_bound_bytes": bound, **child}
    out["read_efficiency"] = out["sampler_bytes_per_s"] / out["plain_bytes_per_s"]
    log(f"  {size}: training {out['train_samples_per_s']:.0f} samples/s ({out['precision']}), epoch "
        f"{out['train_epoch_s']:.0f} s{' (capped)' if out['capped'] else ''}; sampler alone "
        f"{out['sampler_bytes_per_s'] / 1e9:.2f} GB/s vs plain read {out['plain_bytes_per_s'] / 1e9:.2f} GB/s; "
        f"peak memory {out['peak_rss_bytes'] / 1e9:.2f} GB, {out['baseline_rss_bytes'] / 1e9:.2f} before reading (cache {read / 1e9:.1f} GB, buffer bound {bound / 1e9:.2f} GB); "
        f"index {out['index_bytes_per_sample']:.0f} B/sample")
    return out


def patch_files(cache: Path) -> list[Path]:
    """The chunk files of every patch array: what a training run on patch tokens reads."""
    return sorted(f for f in Path(cache).rglob("*") if f.is_file() and "/patch/c/" in f.as_posix())


def run_child(cache: Path, device: torch.device, max_steps: int | None) -> dict:
    """The training epoch in a fresh process: its peak resident memory is the training's alone."""
    cmd = [sys.executable, "-m", "tools.bench.scale", str(cache), str(device), str(max_steps or 0),
           str(torch.get_num_threads())]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[2]),
                                                                      os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"scale training child failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def train_epoch(cache_path: Path, device: torch.device, max_steps: int) -> dict:
    """One sampler-only epoch, then one training epoch (train_head's step, default head), stream mode."""
    defaults = TrainSettings(cache=cache_path, out_dir=Path())
    cache = FeatureCache.open(cache_path)
    sampler = SequenceSampler(cache, whole_episodes(cache), replace(defaults.sampler, mode="stream"), device=device)
    sync = synchronizer(device)
    baseline = resident_bytes()  # python, torch and the sampler's index, before any tokens are read
    start, samples = time.perf_counter(), 0
    for batch in sampler.epoch(0, shuffle=True, drop_last=True):
        samples += len(batch.keys)
    sync()
    sampler_s = time.perf_counter() - start
    head = build_head(replace(defaults.head, grid=cache.grid, channels=cache.stored_channels,
                              cls_channels=int(cache.spec["channels"]), seq_len=defaults.sampler.seq_len)).to(device)
    optimizer = make_optimizer(head, defaults.optim, device.type)
    bf16 = fast_bf16(device)
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=bf16)
    start, steps, trained = time.perf_counter(), 0, 0
    for batch in sampler.epoch(1, shuffle=True, drop_last=True):
        patch, cls = batch.float_tokens()
        train_step(head, optimizer, defaults.optim, steps, patch, cls, batch.keys, autocast)
        steps, trained = steps + 1, trained + len(batch.keys)
        if max_steps and steps >= max_steps:
            break
    sync()
    train_s = time.perf_counter() - start
    index = sampler.index_nbytes()  # after the epochs: with what they hold
    capped = bool(max_steps) and trained < samples
    read = sum(f.stat().st_size for f in patch_files(cache_path))
    return {"samples": samples, "sampler_samples_per_s": samples / sampler_s, "sampler_epoch_s": sampler_s,
            "sampler_bytes_per_s": read / sampler_s, "train_samples": trained, "train_steps": steps,
            "train_samples_per_s": trained / train_s, "train_epoch_s": train_s * (samples / trained if capped else 1),
            "capped": capped, "batch": defaults.sampler.batch_size, "head": defaults.head.kind,
            "precision": precision_name(bf16), "index_bytes": index,
            "index_bytes_per_sample": index / max(1, len(sampler)),
            "baseline_rss_bytes": baseline, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def resident_bytes() -> int:
    """This process's resident memory now (Linux; 0 elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


if __name__ == "__main__":  # the child of run_child: cache, device, max steps, torch threads
    torch.set_num_threads(int(sys.argv[4]))
    print(json.dumps(train_epoch(Path(sys.argv[1]), torch.device(sys.argv[2]), int(sys.argv[3]))))
