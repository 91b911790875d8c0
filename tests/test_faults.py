"""Faults survived: damaged recordings skipped with a warning (never read as zeros), a full disk in the middle
of extraction or training ends in one line and the rerun continues, training never spins on an empty epoch,
runs are not overwritten by accident."""
import errno
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from cache.store import CachedEpisode
from data.episode import Episode, EpisodeMeta, EpisodeWriter
from data.errors import UserError
from data.index import index_episodes
from data.split import SplitSettings
from extract_features.pipeline import ExtractSettings, extract
from tests.conftest import write_episode
from tests.test_features import all_arrays
from tests.test_train import cache, settings as train_settings  # noqa: F401 (cache is a fixture)
from train_head.metrics import read_metrics
from train_head.train import train


def silent(*args):
    pass


@pytest.fixture
def recordings(tmp_path):
    root = tmp_path / "rec"
    write_episode(root / "a.zarr", n=40, fps=20.0, seed=1)
    write_episode(root / "b.zarr", n=40, fps=20.0, seed=2)
    return root


def extract_settings(recordings, cache, **kw):
    return ExtractSettings(recordings=[recordings], cache=cache, backbone="vit_tiny_test", weights="random",
                           variants=("clean",), block_rows=16, batch_size=8, progress=False, **kw)


def test_black_frames_and_a_minute_without_keys_are_not_damage(tmp_path):
    """Chunks of zeros are written too, so a missing chunk file always means damage."""
    with EpisodeWriter(tmp_path / "e.zarr", (8, 8, 3), EpisodeMeta(fps=2.0)) as w:
        w.append(np.zeros((300, 8, 8, 3), np.uint8), np.zeros((300, 4), np.uint8), np.arange(300) / 2.0)
    ep = Episode(tmp_path / "e.zarr")
    assert len(ep) == 300 and ep.frames[:].max() == 0 and ep.keys[:].max() == 0


def test_a_deleted_chunk_is_never_read_as_black_frames(recordings, capsys):
    (recordings / "a.zarr" / "frames" / "c" / "1" / "0" / "0" / "0").unlink()
    with pytest.raises(UserError, match=r"a.zarr: frames chunk c/1/0/0/0 is missing \(rows 20...\)"):
        Episode(recordings / "a.zarr")
    found = index_episodes([recordings])
    assert [e.path.name for e in found] == ["b.zarr"]
    assert "warning: skipping" in (err := capsys.readouterr().err) and "a.zarr: frames chunk" in err
    with pytest.raises(UserError, match="a.zarr: frames chunk"):
        index_episodes([recordings], strict=True)


def test_extraction_skips_a_damaged_recording_with_a_warning(recordings, tmp_path, capsys):
    zarr.open_group(recordings / "a.zarr", mode="r+")["t"][7] = np.nan
    cache = extract(extract_settings(recordings, tmp_path / "cache"), log=silent)
    assert [e.id for e in cache.episodes()] == ["b.zarr"] and cache.episodes()[0].complete()
    err = capsys.readouterr().err
    assert "warning: skipping" in err and "a.zarr: timestamps are not all finite (row 7)" in err


def test_a_chunk_that_does_not_decode_skips_its_episode_and_keeps_the_rest(recordings, tmp_path):
    """Same size, same header, garbage inside: found only when read, then that episode is left out."""
    shutil.rmtree(recordings / "a.zarr")
    frames = np.zeros((40, 180, 240, 3), np.uint8)
    frames[..., 0] = np.arange(240) % 7  # compressible: blosc stores it compressed, and garbage fails to decode
    with EpisodeWriter(recordings / "a.zarr", (180, 240, 3), EpisodeMeta(fps=20.0)) as w:
        w.append(frames, np.zeros((40, 4), np.uint8), np.arange(40) / 20.0)
    chunk = recordings / "a.zarr" / "frames" / "c" / "1" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[16:] = bytes(len(data) - 16)
    chunk.write_bytes(bytes(data))
    Episode(recordings / "a.zarr")  # opens: the damage shows on reading
    warnings = []
    cache = extract(extract_settings(recordings, tmp_path / "cache"), log=warnings.append)
    assert [e.id for e in cache.episodes()] == ["b.zarr"]
    assert any(w.startswith("warning: skipped") and "a.zarr/frames: damaged data" in w for w in warnings), warnings
    with pytest.raises(UserError, match="a.zarr/frames: damaged data"):
        extract(extract_settings(recordings, tmp_path / "strict", strict=True), log=silent)


def test_a_full_disk_during_extraction_is_one_line_and_the_rerun_finishes_the_same(recordings, tmp_path, monkeypatch):
    clean = all_arrays(extract(extract_settings(recordings, tmp_path / "clean"), log=silent).path / "episodes")
    write_block, calls = CachedEpisode.write_block, []

    def full_after_two(self, *args):
        calls.append(1)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        write_block(self, *args)

    monkeypatch.setattr(CachedEpisode, "write_block", full_after_two)
    with pytest.raises(UserError, match=r"cache: the disk is full; free space; the blocks written so far are kept"):
        extract(extract_settings(recordings, tmp_path / "cache"), log=silent)
    monkeypatch.setattr(CachedEpisode, "write_block", write_block)
    done = []
    cache = extract(extract_settings(recordings, tmp_path / "cache"), log=done.append)
    assert any("frames to extract" in line and not line.startswith("2 episodes (2 in all), variants clean: 80")
               for line in done)  # only the blocks that were not written
    assert all(e.complete() for e in cache.episodes())
    again = all_arrays(tmp_path / "cache" / "episodes")
    assert again.keys() == clean.keys() and all(np.array_equal(again[k], clean[k]) for k in clean)


def test_a_full_disk_during_training_keeps_the_last_evaluation_for_resume(cache, tmp_path, monkeypatch):  # noqa: F811
    import train_head.train as loop

    out, save, saves = tmp_path / "run", loop.save_checkpoint, []

    def full_at_second_evaluation(path, *args, **kwargs):
        saves.append(path)
        if len(saves) > 2:  # best.pt and last.pt of step 20 are written, step 40's are not
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return save(path, *args, **kwargs)

    monkeypatch.setattr(loop, "save_checkpoint", full_at_second_evaluation)
    with pytest.raises(UserError, match=r"run: the disk is full; .*rerun with --resume"):
        train(train_settings(cache, out, steps=40))
    monkeypatch.setattr(loop, "save_checkpoint", save)
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 20
    resumed = train_settings(cache, out, steps=40)
    resumed.resume = True
    train(resumed)
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 40


def test_an_earlier_run_is_refused_then_replaced_with_overwrite(cache, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    train(train_settings(cache, out, steps=20))
    with pytest.raises(UserError, match="already holds a run .*--overwrite"):
        train(train_settings(cache, out, steps=20))
    train(train_settings(cache, out, steps=40, overwrite=True))
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl")]
    assert steps == [1, 20, 40]  # the new run's log alone
    assert torch.load(out / "best.pt", weights_only=True)["step"] in (20, 40)


def test_no_validation_sequences_is_said_not_inf(cache, tmp_path, capsys):  # noqa: F811
    s = replace(train_settings(cache, tmp_path / "run", steps=20), quiet=False, split=SplitSettings(val_fraction=0.0))
    best = train(s)
    out = capsys.readouterr().out
    assert "warning: no validation sequences (--val-fraction 0.0" in out
    assert "done at step 20 (no validation sequences: no val loss)" in out and "inf" not in out
    assert best["step"] == 20


def test_an_epoch_without_a_batch_ends_training(cache, tmp_path, monkeypatch):  # noqa: F811
    from cache.sampler import SequenceSampler

    monkeypatch.setattr(SequenceSampler, "epoch", lambda self, *a, **k: iter(()))
    with pytest.raises(UserError, match="--batch-size 16: no full batch in an epoch"):
        train(train_settings(cache, tmp_path / "run", steps=20))


def test_resuming_with_another_head_is_refused(cache, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    train(train_settings(cache, out, steps=20))
    s = train_settings(cache, out, steps=40)
    s.head, s.resume = replace(s.head, kind="gru"), True
    with pytest.raises(UserError, match=r"last.pt: made with other head settings \(--head"):
        train(s)
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 20


def test_an_empty_folder_made_beforehand_becomes_the_cache(recordings, tmp_path):
    (tmp_path / "cache").mkdir()
    cache = extract(extract_settings(recordings, tmp_path / "cache"), log=silent)
    assert [e.id for e in cache.episodes()] == ["a.zarr", "b.zarr"] and all(e.complete() for e in cache.episodes())


def test_an_episode_of_another_frame_size_is_skipped(recordings, tmp_path):
    write_episode(recordings / "small.zarr", n=20, fps=20.0, shape=(8, 8, 3))
    warnings = []
    cache = extract(extract_settings(recordings, tmp_path / "cache"), log=warnings.append)
    assert [e.id for e in cache.episodes()] == ["a.zarr", "b.zarr"]
    assert any("warning: skipping" in w and "small.zarr: frames (8, 8, 3), not the (180, 240, 3)" in w for w in warnings)
    with pytest.raises(UserError, match="pass the right --game"):
        extract(extract_settings(recordings, tmp_path / "strict", strict=True), log=silent)


def test_a_full_disk_while_recording_keeps_the_rows_flushed_before(tmp_path, monkeypatch):
    from data.episode import EpisodeWriter as Writer
    from data.profiles import load_profile
    from data.recorder import Recorder, RecorderSettings
    from tests.test_recorder import ListFrames, ScriptedKeys

    frames = np.random.default_rng(0).integers(0, 256, size=(40, 180, 240, 3), dtype=np.uint8)
    wasd = np.zeros((40, 4), np.uint8)
    flush, flushes = Writer.flush, []

    def full_at_third_flush(self):
        if self._buffer:
            flushes.append(1)
        if len(flushes) >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        flush(self)

    monkeypatch.setattr(Writer, "flush", full_at_third_flush)
    settings = RecorderSettings(out_dir=tmp_path / "rec", profile=load_profile("gta5"), fps=10.0, start_paused=False,
                                flush_seconds=1e6)  # flushed every 10 rows (one chunk), never by the clock
    with pytest.raises(UserError, match=r"rec: the disk is full; .*kept, the last one up to its last flush"):
        Recorder(settings, ListFrames(frames), ScriptedKeys(wasd, []), status=lambda line: None).run()
    monkeypatch.setattr(Writer, "flush", flush)
    episode = Episode(next((tmp_path / "rec" / "regular").iterdir()))
    assert len(episode) == 20 and not episode.complete  # two chunks of 10 rows written, then the disk was full
    np.testing.assert_array_equal(episode.frames[:], frames[:20])
