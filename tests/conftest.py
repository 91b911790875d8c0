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


@pytest.fixture
def make_episode(tmp_path):
    def make(name="ep.zarr", **kw):
        path = tmp_path / name
        return path, write_episode(path, **kw)
    return make
