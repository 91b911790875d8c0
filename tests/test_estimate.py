"""Cache size before extraction (--estimate), the refusal of a cache that will not fit on the disk, the
profile's cache defaults, and train_head's --mode auto."""
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cache.reduce import Reduction
from cache.sampler import SamplerSettings, SequenceSampler
from cache.store import FeatureCache
from data.errors import UserError
from data.profiles import load_profile
from extract_features.estimate import bytes_per_frame, estimate, folder_bytes, profile_reduction
from extract_features.pipeline import extract
from tests.conftest import synthetic_cache, write_episode
from tests.test_features import settings
from train_head.memory import choose_mode, host_free_bytes
from tests.test_train import settings as train_settings
from train_head.train import make_split, train

ROOT = Path(__file__).resolve().parents[1]
TOKEN_ARRAYS = ("patch*", "scale*", "cls", "registers")  # patch_b0 ...: earlier blocks (--layers)


@pytest.fixture
def recordings(tmp_path):
    root = tmp_path / "rec"
    write_episode(root / "a.zarr", n=45, fps=20.0, seed=1)
    write_episode(root / "b.zarr", n=30, fps=20.0, kind="stuck", pad_frames=6, seed=2)
    return root


def token_bytes(cache: Path) -> int:
    """Bytes of the token chunk files the cache holds (its metadata and done flags aside)."""
    return sum(f.stat().st_size for name in TOKEN_ARRAYS for f in cache.glob(f"episodes/*/*/{name}/c/**/*")
               if f.is_file())


@pytest.mark.parametrize("backbone, reduction, layers", [
    ("vit_tiny_test_reg", Reduction(dtype="fp16", fps=10.0), ()),
    ("vit_tiny_test", Reduction(dtype="int8", pca_dim=8, pca_frames=16), ()),
    ("vit_tiny_test", Reduction(dtype="int8", pca_dim=8, pca_frames=16), (0,)),
])
def test_estimate_is_the_size_of_the_cache_then_made(recordings, tmp_path, backbone, reduction, layers):
    s = settings(recordings, tmp_path / "cache", backbone=backbone, reduction=reduction, variants=("clean", "flip"))
    s = replace(s, layers=layers)
    est = estimate(s)
    assert est.existing_bytes == 0 and est.fits
    assert est.bytes_per_frame == bytes_per_frame(48, 4 if backbone.endswith("reg") else 0, 13 * 18, reduction,
                                                  blocks=1 + len(layers))
    cache = extract(s, log=lambda *a: None)
    assert est.frames == sum(ep.n_rows for ep in cache.episodes())
    assert est.total_bytes == token_bytes(cache.path)  # exact: tokens are stored uncompressed, in whole blocks
    assert 0 < folder_bytes(cache.path) - est.total_bytes < 200_000  # zarr metadata, rows, done flags, PCA
    again = estimate(s)  # an incremental run needs nothing more
    assert again.existing_bytes == folder_bytes(cache.path) and again.needed_bytes == 0 and again.fits


def test_extraction_refuses_a_cache_larger_than_the_free_disk(recordings, tmp_path):
    s = settings(recordings, tmp_path / "cache", variants=("clean", "flip"))
    free = estimate(s).total_bytes - 1
    with pytest.raises(UserError) as e:
        extract(s, log=lambda *a: None, free_disk=lambda path: free)
    message = str(e.value)
    assert "--dtype int8 would make it" in message and "\n" not in message
    assert not (tmp_path / "cache").exists()  # nothing started
    assert estimate(replace(s, reduction=Reduction(dtype="int8"))).total_bytes <= free  # the advice is right


def test_estimate_cli_prints_the_sizes_without_the_backbone(recordings, tmp_path):
    # official weights are not in this machine's hub cache: loading the backbone would fail
    r = subprocess.run([sys.executable, "-m", "extract_features", "--recordings", str(recordings), "--cache",
                        str(tmp_path / "c"), "--backbone", "dinov2_vitb14_reg", "--estimate"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # the gta5 defaults: int8, PCA 64, 20 fps (the recordings' rate: every frame); 4 variants
    per_frame = bytes_per_frame(768, 4, 13 * 18, Reduction(dtype="int8", pca_dim=64))
    assert per_frame == 23_124
    out = r.stdout
    assert "2 episodes, 75 frames -> 69 cached frames" in out
    assert "variants: clean, flip, warp, jitter (4)" in out
    assert f"bytes/frame: {per_frame:,} (dinov2_vitb14_reg; int8, PCA 64, 20 fps)" in out
    total = 2 * 256 * per_frame * 4  # each episode rounded up to one 256-row block
    assert f"total: {total / 1e6:.1f} MB for 276 frames x variants" in out and "free disk:" in out and "fits" in out
    assert not (tmp_path / "c").exists()


def test_profile_cache_defaults_and_flags_over_them(tmp_path):
    gta5 = load_profile("gta5")
    assert profile_reduction(gta5) == Reduction(dtype="int8", pca_dim=64, fps=20.0)
    assert profile_reduction(gta5, dtype="fp16", pca_dim="none", fps="none") == Reduction()  # none: off
    assert profile_reduction(load_profile("carracing")) == Reduction()
    bad = tmp_path / "bad.toml"
    bad.write_text((ROOT / "data/profiles/gta5.toml").read_text().replace("pca_dim = 64", "pca = 64"))
    with pytest.raises(UserError, match=r"\[cache\] has pca; known: dtype, pca_dim, fps"):
        load_profile(bad)


def test_gta5_defaults_fit_the_seed_dataset_in_15_gb():
    """The seed: 490k frames at 80 fps, 240x180 -> 18x13 patches, ViT-B/14 with registers, every variant."""
    gta5 = load_profile("gta5")
    reduction = profile_reduction(gta5)
    frames = 490_000 * reduction.fps / gta5.fps
    size = frames * len(gta5.augment.variants) * bytes_per_frame(768, 4, 18 * 13, reduction)
    assert size <= 15e9


@pytest.fixture
def small_cache(tmp_path):
    paths = []
    for i in range(3):
        write_episode(tmp_path / f"e{i}.zarr", n=40, fps=10.0, shape=(8, 8, 3), seed=i)
        paths.append(tmp_path / f"e{i}.zarr")
    return synthetic_cache(tmp_path, paths, variants=("clean", "flip"), every=1, random_tokens=True)


def test_ram_bytes_is_what_ram_mode_loads(small_cache):
    s = SamplerSettings(seq_len=2, stride_s=0.1, batch_size=8, tokens="both")
    split = make_split(FeatureCache.open(small_cache.path), train_settings(small_cache, None).split)
    sampler = SequenceSampler(small_cache, split.train, s)
    loaded = sampler._load_ram()
    assert sampler.ram_bytes() == sum(t.numel() * t.element_size() for t in loaded.values()) > 0


def test_mode_auto_streams_a_cache_larger_than_the_memory_limit(small_cache, tmp_path, capsys):
    def run(limit):
        s = train_settings(small_cache, tmp_path / f"run{limit}", steps=8, memory_limit=limit)
        s.sampler, s.quiet = replace(s.sampler, mode="auto"), False
        best = train(s)
        return best, capsys.readouterr().out

    needed = sum(ep.group[v]["patch"].nbytes for ep in small_cache.episodes() for v in ("clean", "flip"))
    best, out = run(needed)  # below what RAM mode would need with its margin
    assert "streaming it from disk (stream)" in out and best["val_bce"] > 0
    best, out = run(100 * needed)
    assert "loading it (ram)" in out and best["val_bce"] > 0


def test_choose_mode_margins():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")  # limit given: the GPU is not asked
    assert choose_mode(50, cpu, limit=100)[0] == "ram"
    assert choose_mode(51, cpu, limit=100)[0] == "stream"
    mode, why = choose_mode(51, gpu, limit=100)  # fits 75 % of the GPU's, not 50 % of the RAM's
    assert mode == "stream" and "exceed 50% of the 0.0 MB of free RAM" in why


def test_free_host_memory_on_linux_and_windows(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\n")
    assert host_free_bytes("linux", meminfo) == 20_000_000 * 1024

    class Kernel32:  # GlobalMemoryStatusEx fills the MEMORYSTATUSEX it is handed, if dwLength is its size
        def GlobalMemoryStatusEx(self, ref):
            status = ref._obj
            if status.dwLength != 64:
                return 0
            status.ullTotalPhys, status.ullAvailPhys = 32 << 30, 17 << 30
            return 1

    assert host_free_bytes("win32", kernel32=Kernel32()) == 17 << 30
