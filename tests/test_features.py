"""Stage 1: the feature cache holds exactly the backbone's tokens, survives kills, refuses mix-ups."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from cache.reduce import Reduction, dequantize_int8
from cache.store import FeatureCache
from data.augment import apply_variant
from data.episode import Episode
from data.errors import UserError
from data.profiles import load_profile
from extract_features.extractor import FeatureExtractor
from extract_features.loader import load_backbone
from extract_features.pipeline import ExtractSettings, extract
from extract_features.preprocess import PreprocessSettings
from tests.conftest import write_episode

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def recordings(tmp_path):
    root = tmp_path / "rec"
    write_episode(root / "regular" / "a.zarr", n=40, fps=20.0, seed=1)
    write_episode(root / "stuck" / "b.zarr", n=30, fps=20.0, kind="stuck", pad_frames=6, seed=2)
    return root


def settings(recordings, cache, **kw):
    base = ExtractSettings(recordings=[recordings], cache=cache, backbone="vit_tiny_test", weights="random",
                           block_rows=16, batch_size=8, progress=False)
    return replace(base, **kw)


def all_arrays(path: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(path, mode="r")
    return {name: arr[:] for name, arr in group.arrays()} | {
        f"{name}/{sub}": values for name, g in group.groups() for sub, values in all_arrays(path / name).items()}


def test_cached_tokens_equal_a_direct_backbone_call(recordings, tmp_path):
    cache = extract(settings(recordings, tmp_path / "cache", bf16=False), log=lambda *a: None)  # fp32 on any CPU
    profile = load_profile("gta5")
    extractor = FeatureExtractor(load_backbone("vit_tiny_test", "random"), PreprocessSettings(mode="pad"), bf16=False)
    eps = {e.id: e for e in cache.episodes()}
    assert set(eps) == {"regular__a.zarr", "stuck__b.zarr"}
    stuck = eps["stuck__b.zarr"]
    np.testing.assert_array_equal(stuck.rows, np.arange(6, 30))  # the stuck padding is never cached
    rec = Episode(stuck.recording)
    for variant in ["clean", "flip", "warp", "jitter"]:
        start, stop = stuck.block_range(1)
        rows = stuck.rows[start:stop]
        frames, keys, _ = rec.read(int(rows[0]), int(rows[-1]) + 1)
        augmented, _ = apply_variant(frames, keys, profile.augment.variant(variant), profile, seed=0,
                                     episode=stuck.id, block=1)
        direct = extractor(torch.from_numpy(augmented))
        stored = stuck.read(variant, start, stop)
        np.testing.assert_array_equal(stored["patch"], direct.patch.half().numpy())
        np.testing.assert_array_equal(stored["cls"], direct.cls.half().numpy())
    assert not np.array_equal(stuck.read("flip")["patch"], stuck.read("clean")["patch"])


def test_int8_and_pca_round_trips(recordings, tmp_path):
    fp16 = extract(settings(recordings, tmp_path / "fp16", variants=("clean",)), log=lambda *a: None)
    int8 = extract(settings(recordings, tmp_path / "int8", variants=("clean",), reduction=Reduction(dtype="int8")),
                   log=lambda *a: None)
    ref = fp16.episode("regular__a.zarr").read("clean")["patch"].astype(np.float32)
    q = int8.episode("regular__a.zarr").read("clean")
    back = dequantize_int8(torch.from_numpy(q["patch"]), torch.from_numpy(q["scale"])).numpy()
    bound = q["scale"].astype(np.float32)[..., None] * 0.5 + np.abs(ref) * 2e-3  # half a step + fp16 rounding
    assert np.all(np.abs(back - ref) <= bound)
    assert q["patch"].dtype == np.int8 and q["patch"].nbytes * 2 == ref.astype(np.float16).nbytes

    pca = extract(settings(recordings, tmp_path / "pca", variants=("clean",), reduction=Reduction(pca_dim=16)),
                  log=lambda *a: None)
    assert pca.stored_channels == 16
    stored = pca.episode("regular__a.zarr").read("clean")["patch"]
    assert stored.shape == (40, 13 * 18, 16)
    projected = pca.projection(torch.from_numpy(ref)).numpy()  # same projection applied to the fp16 tokens
    assert np.abs(stored.astype(np.float32) - projected).max() < 0.02 * np.abs(projected).max()
    reconstructed = projected @ pca.projection.components.numpy() + pca.projection.mean.numpy()
    kept = 1 - ((reconstructed - ref) ** 2).sum() / ((ref - ref.mean(axis=(0, 1))) ** 2).sum()
    assert kept > 0.5  # 16 of 32 channels keep most of the variance of a random ViT's tokens


def test_fingerprint_refusal_and_changed_recording(recordings, tmp_path):
    cache_dir = tmp_path / "cache"
    extract(settings(recordings, cache_dir, variants=("clean",)), log=lambda *a: None)
    with pytest.raises(UserError, match="made with other settings.*reduction"):
        extract(settings(recordings, cache_dir, variants=("clean",), reduction=Reduction(dtype="int8")), log=lambda *a: None)
    with pytest.raises(UserError, match="augment"):
        extract(settings(recordings, cache_dir, variants=("clean", "flip")), log=lambda *a: None)
    # the same settings again: nothing to do, nothing changed
    before = all_arrays(cache_dir)
    extract(settings(recordings, cache_dir, variants=("clean",)), log=lambda *a: None)
    after = all_arrays(cache_dir)
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    # re-record one episode under the same name: detected, then re-extracted on --refresh
    import shutil
    shutil.rmtree(recordings / "regular" / "a.zarr")
    write_episode(recordings / "regular" / "a.zarr", n=36, fps=20.0, seed=7)
    with pytest.raises(UserError, match="changed since extraction: regular__a.zarr.*--refresh"):
        extract(settings(recordings, cache_dir, variants=("clean",)), log=lambda *a: None)
    cache = extract(settings(recordings, cache_dir, variants=("clean",), refresh=True), log=lambda *a: None)
    assert cache.episode("regular__a.zarr").n_rows == 36


def test_shards_union_to_the_full_cache(recordings, tmp_path):
    write_episode(recordings / "turns" / "c.zarr", n=20, fps=20.0, kind="turns", seed=3)
    full = tmp_path / "full"
    extract(settings(recordings, full, variants=("clean", "flip")), log=lambda *a: None)
    sharded = tmp_path / "sharded"
    first = extract(settings(recordings, sharded, variants=("clean", "flip"), shard=(1, 2)), log=lambda *a: None)
    assert [e.id for e in first.episodes()] == ["regular__a.zarr", "turns__c.zarr"]
    extract(settings(recordings, sharded, variants=("clean", "flip"), shard=(2, 2)), log=lambda *a: None)
    a, b = all_arrays(full), all_arrays(sharded)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_two_backbone_workers_write_the_same_cache_and_give_the_threads_back(recordings, tmp_path, monkeypatch):
    one = extract(settings(recordings, tmp_path / "one", bf16=False), log=lambda *a: None)
    threads, seen = torch.get_num_threads(), []
    call = FeatureExtractor.__call__

    def recording_thread(self, frames):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return call(self, frames)

    monkeypatch.setattr(FeatureExtractor, "__call__", recording_thread)
    torch.set_num_threads(4)
    try:
        two = extract(settings(recordings, tmp_path / "two", bf16=False, workers=2), log=lambda *a: None)
        assert torch.get_num_threads() == 4  # shared out as 2 + 2 while extracting, then given back
    finally:
        torch.set_num_threads(threads)
    assert len({name for name, _ in seen}) == 2 and {n for _, n in seen} == {2}
    a, b = all_arrays(one.path), all_arrays(two.path)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_failing_backbone_worker_stops_the_extraction_with_its_error(recordings, tmp_path, monkeypatch):
    call, failed = FeatureExtractor.__call__, threading.Event()

    def fails_on_a_helper(self, frames):
        if threading.current_thread() is not threading.main_thread():
            failed.set()
            raise RuntimeError("out of memory in a helper")
        failed.wait(timeout=30)  # the helper surely takes an item before the main thread is done
        return call(self, frames)

    monkeypatch.setattr(FeatureExtractor, "__call__", fails_on_a_helper)
    with pytest.raises(RuntimeError, match="out of memory in a helper"):
        extract(settings(recordings, tmp_path / "cache", workers=2), log=lambda *a: None)
    cache = FeatureCache.open(tmp_path / "cache")
    assert not all(e.complete() for e in cache.episodes())  # stopped, and a rerun redoes the missing blocks


SLOW_EXTRACT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import extract_features.extractor as bb
    from extract_features.pipeline import ExtractSettings, extract
    call = bb.FeatureExtractor.__call__
    def slow(self, frames):
        time.sleep(0.15)
        return call(self, frames)
    bb.FeatureExtractor.__call__ = slow
    extract(ExtractSettings(recordings=[Path(sys.argv[1])], cache=Path(sys.argv[2]), backbone="vit_tiny_test",
                            weights="random", block_rows=16, batch_size=8, progress=False), log=lambda *a: None)
""")


def test_sigkill_then_resume_is_bit_identical(recordings, tmp_path):
    reference = tmp_path / "reference"
    extract(settings(recordings, reference), log=lambda *a: None)
    cache_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_EXTRACT, str(recordings), str(cache_dir)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            done = list(cache_dir.glob("episodes/*/*/done/c/*"))
            if len(done) >= 2:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    cache = FeatureCache.open(cache_dir)
    partial = [v for e in cache.episodes() for v in e.variants if not e.done(v).all()]
    assert partial, "the kill should have landed mid-extraction"
    extract(settings(recordings, cache_dir), log=lambda *a: None)
    a, b = all_arrays(reference), all_arrays(cache_dir)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_cli_errors_are_one_line(recordings, tmp_path):
    r = subprocess.run([sys.executable, "-m", "extract_features", "--recordings", str(tmp_path / "none"),
                        "--cache", str(tmp_path / "c"), "--weights", "random"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == f"error: {tmp_path / 'none'}: no such recordings directory"
    r = subprocess.run([sys.executable, "-m", "extract_features", "--recordings", str(recordings), "--cache",
                        str(tmp_path / "c"), "--backbone", "vit_tiny_test", "--weights", "random", "--variants", "clean,nope"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "unknown variant(s) nope" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "c").exists()


def test_hud_distort_augments_the_minimap_like_any_pixel_in_its_own_cache(recordings, tmp_path):
    quiet = lambda *a: None  # noqa: E731
    kept = extract(settings(recordings, tmp_path / "keep", bf16=False, variants=("clean", "flip")), log=quiet)
    distorted = extract(settings(recordings, tmp_path / "distort", bf16=False, variants=("clean", "flip"),
                                 hud="distort"), log=quiet)
    assert kept.spec["hud"] == "keep" and distorted.spec["hud"] == "distort"
    assert kept.fingerprint != distorted.fingerprint
    with pytest.raises(UserError, match="fingerprint|settings"):  # one cache never mixes the two
        extract(settings(recordings, tmp_path / "keep", bf16=False, variants=("clean", "flip"), hud="distort"),
                log=quiet)

    profile = load_profile("gta5")
    extractor = FeatureExtractor(load_backbone("vit_tiny_test", "random"), PreprocessSettings(mode="pad"), bf16=False)
    ep = {e.id: e for e in distorted.episodes()}["regular__a.zarr"]
    start, stop = ep.block_range(0)
    frames, keys, _ = Episode(ep.recording).read(int(ep.rows[start]), int(ep.rows[stop - 1]) + 1)
    flipped, _ = apply_variant(frames, keys, profile.augment.variant("flip"), replace(profile, hud={}), seed=0,
                               episode=ep.id, block=0)
    rect = profile.hud["minimap"]
    assert (flipped[:, rect.y0:rect.y1, rect.x0:rect.x1] != frames[:, rect.y0:rect.y1, rect.x0:rect.x1, ::-1]).any()
    np.testing.assert_array_equal(ep.read("flip", start, stop)["patch"],
                                  extractor(torch.from_numpy(flipped)).patch.half().numpy())
    kept_ep = {e.id: e for e in kept.episodes()}["regular__a.zarr"]
    np.testing.assert_array_equal(kept_ep.read("clean")["patch"], ep.read("clean")["patch"])
    assert not np.array_equal(kept_ep.read("flip")["patch"], ep.read("flip")["patch"])


def test_caches_made_before_the_hud_setting_keep_their_fingerprint():
    from dataclasses import asdict
    import hashlib
    import json
    from cache.store import CacheSpec
    spec = CacheSpec(backbone="b", weights_digest="0", weights_label="l", weights_source="s", preprocess={},
                     precision="fp32", augment="", augment_seed=0, reduction={}, block_rows=8, grid=(2, 3),
                     channels=4, registers=0)
    old = {k: v for k, v in asdict(spec).items() if k not in ("weights_label", "weights_source", "layers", "hud")}
    assert spec.fingerprint() == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    assert replace(spec, hud="distort").fingerprint() != spec.fingerprint()
