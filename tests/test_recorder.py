import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from data.episode import Episode
from data.key_input import KeyState
from data.profiles import load_profile
from data.recorder import Recorder, RecorderSettings

ROOT = Path(__file__).resolve().parents[1]


class ListFrames:
    def __init__(self, frames):
        self.frames, self.i = frames, 0

    def grab(self):
        if self.i >= len(self.frames):
            return None
        self.i += 1
        return self.frames[self.i - 1]


class ScriptedKeys:
    """Key state per poll: w/a/s/d from a table, the pause key down on the given ticks."""

    def __init__(self, wasd, pause_ticks):
        self.wasd, self.pause_ticks, self.i = wasd, set(pause_ticks), 0

    def poll(self):
        i = min(self.i, len(self.wasd) - 1)
        self.i += 1
        return KeyState(self.wasd[i], frozenset({"t"}) if i in self.pause_ticks else frozenset())


def test_injected_sources_one_episode_per_resume(tmp_path):
    profile = load_profile("gta5")
    n = 25
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(n, 180, 240, 3), dtype=np.uint8)
    wasd = rng.integers(0, 2, size=(n, 4), dtype=np.uint8)
    # start, pause at tick 10, resume at 15 (tick 16 holds T too: one press, not two)
    keys = ScriptedKeys(wasd, pause_ticks=[0, 10, 15, 16])
    settings = RecorderSettings(out_dir=tmp_path, profile=profile, kind="turns", fps=500.0)
    episodes = Recorder(settings, ListFrames(frames), keys, status=lambda line: None).run()

    assert len(episodes) == 2
    first, second = Episode(episodes[0]), Episode(episodes[1])
    for ep, rows in ((first, range(0, 10)), (second, range(15, 25))):
        got_frames, got_keys, t = ep.read()
        np.testing.assert_array_equal(got_frames, frames[list(rows)])
        np.testing.assert_array_equal(got_keys, wasd[list(rows)])
        assert ep.complete and ep.kind == "turns" and ep.profile == "gta5"
        assert np.all(np.diff(t) > 0) and t[0] >= 0
    assert first.path.parent == tmp_path / "turns"


def test_resizes_capture_to_profile_and_sets_stuck_padding(tmp_path):
    profile = load_profile("gta5")
    frames = np.full((30, 600, 800, 3), 77, dtype=np.uint8)  # the 800x600 client area
    keys = ScriptedKeys(np.zeros((30, 4), np.uint8), pause_ticks=[])
    settings = RecorderSettings(out_dir=tmp_path, profile=profile, kind="stuck", fps=100.0,
                                pad_seconds=0.1, start_paused=False)
    (path,) = Recorder(settings, ListFrames(frames), keys, status=lambda line: None).run()
    ep = Episode(path)
    assert ep.frame_shape == (180, 240, 3) and int(ep.frames[0].mean()) == 77
    t = ep.t[:]
    assert ep.pad_frames == int(np.sum(t < 0.1)) and 0 < ep.pad_frames < 30  # counted from real timestamps


RECORD_FOREVER = textwrap.dedent("""
    import sys, numpy as np
    from pathlib import Path
    from data.atomic import write_text
    from data.key_input import KeyState
    from data.profiles import load_profile
    from data.recorder import Recorder, RecorderSettings
    out, progress = Path(sys.argv[1]), Path(sys.argv[2])
    base = np.random.default_rng(0).integers(0, 256, size=(180, 240, 3), dtype=np.uint8)

    class Frames:
        i = 0
        def grab(self):
            frame = base.copy()
            frame[0, :4, 0] = np.frombuffer(np.uint32(self.i).tobytes(), np.uint8)  # frame number
            self.i += 1
            write_text(progress, str(self.i))  # atomic: the test never reads a half-written count
            return frame

    class Keys:
        def poll(self):
            return KeyState(np.array([1, 0, 0, 1], np.uint8), frozenset())

    settings = RecorderSettings(out_dir=out, profile=load_profile("gta5"), fps=50.0, start_paused=False)
    Recorder(settings, Frames(), Keys(), status=lambda line: None).run()
""")


def test_sigkill_mid_recording_keeps_flushed_frames(tmp_path):
    progress = tmp_path / "progress"
    proc = subprocess.Popen([sys.executable, "-c", RECORD_FOREVER, str(tmp_path / "rec"), str(progress)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if progress.exists() and progress.read_text() and int(progress.read_text()) >= 130:
                break
            time.sleep(0.05)
        else:
            pytest.fail("recorder did not start")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        grabbed = int(progress.read_text())
    finally:
        proc.kill()
    (path,) = list((tmp_path / "rec" / "regular").iterdir())
    ep = Episode(path)
    assert not ep.complete
    assert grabbed - 60 <= len(ep) <= grabbed  # at most ~1 s (50 frames at 50 fps) lost
    frames, keys, _ = ep.read()
    numbers = frames[:, 0, :4, 0].copy().view(np.uint32).ravel()
    np.testing.assert_array_equal(numbers, np.arange(len(ep)))  # every flushed frame, in order
    assert (keys == [1, 0, 0, 1]).all()
