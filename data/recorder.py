"""The recorder: frames from a screen source and w/a/s/d from a key source, at a target rate.

Recording starts paused; the pause key (T) starts an episode and pauses again, and every resume opens
a new episode. Both sources are injectable, so tests drive the recorder with synthetic frames and keys.
"""
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from data.errors import PLACE_ERRORS, disk_error, require
from data.episode import EpisodeMeta, EpisodeWriter
from data.key_input import KeyState
from data.labels import keys_text
from data.profiles import GameProfile, to_frame_size


class FrameSource(Protocol):
    def grab(self) -> np.ndarray | None:  # RGB uint8 (H, W, 3); None when the source has ended
        ...


class KeySource(Protocol):
    def poll(self) -> KeyState:
        ...


@dataclass(frozen=True)
class RecorderSettings:
    out_dir: Path
    profile: GameProfile
    kind: str = "regular"
    fps: float | None = None  # target rate; None: the profile's
    pad_seconds: float = 0.0  # stuck recordings: hold still this long at the start of each episode
    discard_seconds: float = 0.0  # drop the last seconds of an episode when pausing (a botched moment)
    pause_key: str = "t"
    start_paused: bool = True
    max_seconds: float | None = None  # stop after this much wall time
    flush_seconds: float = 1.0
    capture: dict | None = None  # capture geometry, stored with each episode

    def __post_init__(self):
        if self.fps is not None:
            require(1 <= self.fps <= 1000, "--fps", self.fps, "1 to 1000 frames per second")
        require(self.pad_seconds >= 0, "--pad-seconds", self.pad_seconds, ">= 0 seconds")
        require(self.discard_seconds >= 0, "--discard-seconds", self.discard_seconds, ">= 0 seconds")
        if self.max_seconds is not None:
            require(self.max_seconds > 0, "--minutes", self.max_seconds / 60, "> 0 minutes")
        require(self.flush_seconds > 0, "flush_seconds", self.flush_seconds, "> 0 seconds")


class Recorder:
    def __init__(self, settings: RecorderSettings, frames: FrameSource, keys: KeySource,
                 status: Callable[[str], None] | None = None):
        self.s = settings
        self.frames, self.keys = frames, keys
        self.status = status or (lambda line: print(f"\r{line:<100}", end="", file=sys.stderr, flush=True))
        self.fps = settings.fps or settings.profile.fps
        self.episodes: list[Path] = []
        self._writer: EpisodeWriter | None = None
        self._t0 = 0.0

    def run(self) -> list[Path]:
        """Record until the frame source ends, max_seconds pass, or Ctrl-C. Returns the episodes written."""
        period = 1.0 / self.fps
        start = next_tick = time.perf_counter()
        paused, pause_was_down = self.s.start_paused, False
        grabbed, last_status = 0, 0.0
        try:
            if not paused:
                self._open_episode()
            while self.s.max_seconds is None or time.perf_counter() - start < self.s.max_seconds:
                state = self.keys.poll()
                pause_down = self.s.pause_key in state.down
                if pause_down and not pause_was_down:
                    paused = not paused
                    if paused:
                        self._close_episode()
                    else:
                        self._open_episode()
                pause_was_down = pause_down
                frame = self.frames.grab()
                if frame is None:
                    break
                grabbed += 1
                if not paused:
                    self._append(frame, state.wasd)
                now = time.perf_counter()
                if now - last_status >= 0.5:
                    self.status(self._status_line(paused, grabbed / max(now - start, 1e-9), state))
                    last_status = now
                next_tick += period
                if next_tick > now:
                    time.sleep(next_tick - now)
                elif now - next_tick > period:  # fell behind (slow capture): do not try to catch up
                    next_tick = now
        except KeyboardInterrupt:
            pass
        except BaseException as e:
            try:
                self._close_episode(complete=False)
            except OSError:  # the disk that failed a write may fail this one too; rows up to the last flush stay
                pass
            if isinstance(e, OSError) and e.errno in PLACE_ERRORS:
                raise disk_error(e, self.s.out_dir, kept="the episodes recorded so far are kept, the last one up "
                                                         "to its last flush") from None
            raise
        finally:
            self._close_episode()
            self.status(f"done: {len(self.episodes)} episode(s) in {self.s.out_dir}\n")
        return self.episodes

    def _open_episode(self) -> None:
        h, w, _ = self.s.profile.frame_shape
        name = time.strftime("%Y%m%d-%H%M%S")
        path = self.s.out_dir / self.s.kind / f"{name}.zarr"
        n = 1
        while path.exists() or path in self.episodes:
            n += 1
            path = self.s.out_dir / self.s.kind / f"{name}-{n}.zarr"
        meta = EpisodeMeta(fps=self.fps, kind=self.s.kind, pad_frames=round(self.s.pad_seconds * self.fps),
                           profile=self.s.profile.name, capture=self.s.capture or {}, source="recorded")
        self._writer = EpisodeWriter(path, (h, w, 3), meta, flush_seconds=self.s.flush_seconds)
        self.episodes.append(path)
        self._t0 = time.perf_counter()

    def _append(self, frame: np.ndarray, wasd: np.ndarray) -> None:
        self._writer.append(to_frame_size(frame, self.s.profile.frame_size), wasd, time.perf_counter() - self._t0)

    def _close_episode(self, complete: bool = True) -> None:
        writer, self._writer = self._writer, None
        if writer is None or writer.closed:
            return
        if complete and self.s.discard_seconds > 0:
            writer.discard_last(self.s.discard_seconds)
        writer.flush()
        attrs = {}
        if self.s.pad_seconds > 0 and writer.n_frames:
            attrs["pad_frames"] = int(np.searchsorted(writer.t[:writer.n_frames], self.s.pad_seconds))
        writer.close(complete=complete, **attrs)

    def _status_line(self, paused: bool, fps: float, state: KeyState) -> str:
        if paused:
            return f"PAUSED  press {self.s.pause_key.upper()} to record  ({len(self.episodes)} episode(s) so far)"
        writer = self._writer
        elapsed = time.perf_counter() - self._t0
        note = "  PADDING: hold still" if elapsed < self.s.pad_seconds else ""
        return (f"REC {writer.path.name}  {len(writer)} frames  {elapsed:6.1f} s  "
                f"{fps:5.1f} fps  keys {keys_text(state.wasd)}{note}")
