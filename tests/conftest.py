import numpy as np
import pytest

from data.episode import EpisodeMeta, EpisodeWriter


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with make test-all (pytest --runslow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def synthetic_frames(n: int, shape=(180, 240, 3), seed: int = 0) -> np.ndarray:
    """Frames whose pixels differ per frame (so mix-ups show), with structure (so they compress)."""
    rng = np.random.default_rng(seed)
    h, w, _ = shape
    base = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    frames = np.repeat(base[None], n, axis=0)
    frames[:, 0, :, 0] = (np.arange(n) % 256)[:, None]  # row 0 of red encodes the frame number
    return frames


def synthetic_keys(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=(n, 4), dtype=np.uint8)


def write_episode(path, n=40, fps=20.0, kind="regular", pad_frames=0, shape=(180, 240, 3), seed=0):
    """A complete episode with n synthetic frames; returns (frames, keys, t) as written."""
    frames, keys = synthetic_frames(n, shape, seed), synthetic_keys(n, seed)
    t = np.arange(n) / fps
    with EpisodeWriter(path, shape, EpisodeMeta(fps=fps, kind=kind, pad_frames=pad_frames)) as w:
        w.append(frames, keys, t)
    return frames, keys, t


def synthetic_cache(tmp_path, episodes, variants=("clean", "flip"), block_rows=8, every=2, grid=(2, 3), channels=4,
                    random_tokens=False, dtype="fp16", augment=None, weights_label="synthetic"):
    """A feature cache without a backbone. Cache rows = every `every`-th recording row after the
    padding; patch tokens hold 1000 * variant index + recording row (or random numbers), cls the
    episode number. dtype="int8": patches stored quantized, with their scales. augment: the profile's
    [augment] table the cache says its variants come from (default: a flip)."""
    import torch

    from cache.reduce import quantize_int8
    from cache.store import CacheSpec, FeatureCache
    from data.augment import AugmentSpec
    from data.episode import Episode

    GRID, C = grid, channels
    rng = np.random.default_rng(0)
    spec = CacheSpec(backbone="synthetic", weights_digest="0", weights_label=weights_label, weights_source="none",
                     preprocess={}, precision="fp32", augment=AugmentSpec.from_table(augment or {"flip": {"flip": {"p": 1.0}}}).text(), augment_seed=0,
                     reduction={"dtype": dtype, "pca_dim": None, "pca_frames": 1, "fps": None},
                     block_rows=block_rows, grid=GRID, channels=C, registers=0)
    cache = FeatureCache.create_or_open(tmp_path / "cache", spec)
    for e, path in enumerate(episodes):
        rec = Episode(path)
        rows = np.arange(rec.pad_frames, len(rec), every)
        ep = cache.add_episode(path.name, path, rec.digest(), rec.kind, rows, list(variants))
        for vi, v in enumerate(variants):
            for b in range(ep.n_blocks):
                start, stop = ep.block_range(b)
                value = (1000 * vi + rows[start:stop]).astype(np.float16)
                patch = np.broadcast_to(value[:, None, None], (stop - start, GRID[0] * GRID[1], C))
                if random_tokens:
                    patch = rng.standard_normal(patch.shape).astype(np.float16)
                arrays = {"patch": patch, "cls": np.full((stop - start, C), e, np.float16)}
                if dtype == "int8":
                    q, scale = quantize_int8(torch.from_numpy(patch.astype(np.float32)))
                    arrays.update(patch=q.numpy(), scale=scale.numpy())
                ep.write_block(v, b, arrays)
    return FeatureCache.open(tmp_path / "cache")


@pytest.fixture
def make_episode(tmp_path):
    def make(name="ep.zarr", **kw):
        path = tmp_path / name
        return path, write_episode(path, **kw)
    return make
