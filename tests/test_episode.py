import json

import numpy as np
import pytest

from data.episode import Episode, EpisodeMeta, EpisodeWriter
from data.errors import UserError
from data.index import index_episodes
from data.split import SplitSettings, split_episodes
from tests.conftest import synthetic_frames, synthetic_keys, write_episode


def test_many_small_appends_read_back_bit_identical(tmp_path):
    n, shape = 137, (36, 48, 3)
    frames, keys, t = synthetic_frames(n, shape), synthetic_keys(n), np.arange(n) / 30.0
    with EpisodeWriter(tmp_path / "e.zarr", shape, EpisodeMeta(fps=30.0, kind="turns")) as w:
        i = 0
        for size in [1, 2, 3, 5, 7, 11] * 10:  # ragged appends across chunk edges
            if i >= n:
                break
            w.append(frames[i:i + size], keys[i:i + size], t[i:i + size])
            i += size
        for j in range(i, n):  # and single frames
            w.append(frames[j], keys[j], t[j])
    ep = Episode(tmp_path / "e.zarr")
    assert len(ep) == n and ep.complete and ep.kind == "turns"
    got_f, got_k, got_t = ep.read()
    np.testing.assert_array_equal(got_f, frames)
    np.testing.assert_array_equal(got_k, keys)
    np.testing.assert_array_equal(got_t, t)
    assert ep.frames[5].shape == shape and ep.frames[-1][0, 0, 0] == (n - 1) % 256
    assert ep.fps == pytest.approx(30.0)


def test_flushes_within_a_second_and_incomplete_on_exception(tmp_path):
    shape = (8, 8, 3)
    path = tmp_path / "e.zarr"
    with pytest.raises(RuntimeError):
        with EpisodeWriter(path, shape, EpisodeMeta(fps=1000.0), flush_seconds=0.0) as w:
            w.append(synthetic_frames(3, shape), synthetic_keys(3), np.arange(3) / 1000)
            assert Episode(path).n_frames == 3  # flush_seconds=0: visible at once
            raise RuntimeError("boom")
    ep = Episode(path)
    assert not ep.complete and len(ep) == 3


def test_discard_last_seconds(tmp_path):
    shape = (8, 8, 3)
    with EpisodeWriter(tmp_path / "e.zarr", shape, EpisodeMeta(fps=10.0)) as w:
        w.append(synthetic_frames(50, shape), synthetic_keys(50), np.arange(50) / 10)
        assert w.discard_last(2.0) == 20  # t 2.9 < t <= 4.9 dropped
    ep = Episode(tmp_path / "e.zarr")
    assert len(ep) == 30 and ep.t[-1] == pytest.approx(2.9)


def test_never_overwrites_and_rejects_wrong_frames(tmp_path, make_episode):
    path, _ = make_episode()
    with pytest.raises(UserError, match="already exists"):
        EpisodeWriter(path, (180, 240, 3), EpisodeMeta(fps=10))
    with EpisodeWriter(tmp_path / "x.zarr", (8, 8, 3), EpisodeMeta(fps=10)) as w:
        with pytest.raises(ValueError, match="uint8"):
            w.append(np.zeros((8, 8, 3), np.float32), np.zeros(4), 0.0)


def test_index_over_roots_filters_kind_and_skips_corrupt(tmp_path, capsys):
    for root, name, kind in [("new_data", "a.zarr", "regular"), ("stuck", "b.zarr", "stuck"),
                             ("stuck", "c.zarr", "stuck")]:
        write_episode(tmp_path / root / name, n=10, shape=(8, 8, 3), kind=kind)
    bad = tmp_path / "stuck" / "bad.zarr"
    write_episode(bad, n=10, shape=(8, 8, 3))
    meta = json.loads((bad / "zarr.json").read_text())
    meta["attributes"]["n_frames"] = 99  # claims rows it does not have
    (bad / "zarr.json").write_text(json.dumps(meta))
    roots = [tmp_path / "new_data", tmp_path / "stuck"]
    all_eps = index_episodes(roots)
    assert [e.path.name for e in all_eps] == ["a.zarr", "b.zarr", "c.zarr"]
    assert "bad.zarr" in capsys.readouterr().err
    assert [e.path.name for e in index_episodes(roots, kinds=["stuck"])] == ["b.zarr", "c.zarr"]
    with pytest.raises(UserError, match="bad.zarr"):
        index_episodes(roots, strict=True)
    with pytest.raises(UserError, match="no such recordings directory"):
        index_episodes([tmp_path / "nope"])


def test_split_is_deterministic_and_disjoint(tmp_path):
    for i in range(12):
        write_episode(tmp_path / f"e{i:02d}.zarr", n=10, shape=(8, 8, 3))
    eps = index_episodes([tmp_path])
    a = split_episodes(eps, SplitSettings(val_fraction=0.25, seed=3))
    b = split_episodes(eps, SplitSettings(val_fraction=0.25, seed=3))
    assert a == b and len(a.val) == 3 and len(a.train) == 9
    assert not {s.path for s in a.train} & {s.path for s in a.val}
    assert split_episodes(eps, SplitSettings(val_fraction=0.25, seed=4)) != a


def test_split_cuts_few_long_episodes_into_blocks(tmp_path):
    write_episode(tmp_path / "long.zarr", n=200, fps=10.0, shape=(8, 8, 3))
    write_episode(tmp_path / "short.zarr", n=35, fps=10.0, shape=(8, 8, 3))
    split = split_episodes(index_episodes([tmp_path]), SplitSettings(val_fraction=0.2, block_seconds=5.0))
    assert split.train and split.val
    for path in {s.path for s in split.train + split.val}:
        rows = [(s.start, s.stop) for s in split.train + split.val if s.path == path]
        covered = sorted(r for a, b in rows for r in range(a, b))
        assert covered == list(range(len(covered)))  # every row exactly once, on one side only
    assert sum(len(s) for s in split.train + split.val) == 235
