"""Take over and teach (HG-DAgger): the player grabs control while the agent drives; the grabbed stretch is
recorded as a `correction` episode.

While the agent drives, every frame it acts on goes into a rolling buffer of the last `context_s` seconds.
A physical press of w/a/s/d (or of the takeover key, held while the player drives) hands control to the player: the agent's keys
are released at once, and a correction episode opens with the buffered frames as its lead-up —
`context_frames`: input for the first sequences, never a label. Then every frame is recorded with the
player's keys. After `handback_s` seconds with no player key down, or at once on releasing the takeover
key, the agent drives again; keys still held then take control again only when pressed anew.

Game-agnostic: the player's keys come from an injected event source whose events say whether they were
injected (the agent's own SendInput presses show up in a Windows keyboard hook too, and must never count
as a takeover); the clock is the caller's. GTA V feeds it a low-level keyboard hook (drive.gta5.player_keys),
the embedded game a scripted expert behind a gate (drive.carracing.corrections).
"""
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import numpy as np

from data.episode import EpisodeMeta, EpisodeWriter
from data.errors import UserError
from data.labels import KEYS

AGENT, PLAYER = "agent", "player"
KIND = "correction"


class KeyEvent(NamedTuple):
    key: str  # "w", "a", "s", "d", or another key's name (the takeover key)
    down: bool
    t: float  # the caller's clock
    injected: bool = False  # sent by a program (the agent), not typed by the player


@dataclass
class TakeoverSettings:
    out_dir: Path
    context_s: float | None = None  # lead-up kept before a takeover; None: one sequence plus the label shift
    handback_s: float = 1.5  # the agent drives again after this long with no player key down
    takeover_key: str = "y"  # held: the player drives; released: the agent drives again at once (not capslock:
    #                          in GTA V it fires a special ability in a car)
    fps: float = 10.0  # the player's frames are recorded at most this often
    flush_seconds: float = 1.0  # a killed run keeps the correction up to its last flush

    def check(self) -> None:
        if self.context_s is not None and not self.context_s >= 0:
            raise UserError(f"--context {self.context_s}: must be >= 0 seconds")
        if not self.handback_s > 0:
            raise UserError(f"--handback {self.handback_s}: must be > 0 seconds")
        if not self.fps > 0:
            raise UserError(f"correction fps {self.fps}: must be > 0")
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise UserError(f"--record-corrections {self.out_dir}: is a file; give a directory")


def default_context_s(seq_len: int, stride_s: float, label_shift_s: float) -> float:
    """Enough lead-up for one whole sequence whose label is the player's first frame (plus a stride of slack)."""
    return seq_len * stride_s + label_shift_s


class Takeover:
    """Who drives, and the correction episodes. The live loop calls observe() on each frame the agent acts
    on, poll() once per iteration, and record() on each frame while the player drives."""

    def __init__(self, settings: TakeoverSettings, player_events: Callable[[], Iterable[KeyEvent]],
                 release_agent: Callable[[], None], frame_shape: tuple[int, int, int], profile: str,
                 context_s: float, log: Callable[[str], None] = print, name: str = "correction"):
        settings.check()
        self.s, self.player_events, self.release_agent = settings, player_events, release_agent
        self.frame_shape, self.profile, self.context_s, self.log, self.name = frame_shape, profile, context_s, log, name
        self.driver = AGENT
        self.episodes: list[Path] = []
        self.player_frames = 0  # frames recorded with the player's keys, over all corrections
        self._lead_up: deque[tuple[float, np.ndarray]] = deque()
        self._held: set[str] = set()  # keys the player holds (injected events never change it)
        self._key_released = False  # the takeover key went up since the last poll
        self._last_input = -math.inf
        self._writer: EpisodeWriter | None = None
        self._t0 = 0.0
        self._last_recorded = -math.inf

    @property
    def held(self) -> frozenset[str]:
        """The keys the player holds now."""
        return frozenset(self._held)

    def observe(self, frame: np.ndarray, t: float) -> None:
        """A frame the agent acts on (or the player's last ones): kept for the lead-up of a takeover."""
        self._lead_up.append((t, frame))
        while self._lead_up and self._lead_up[0][0] < t - self.context_s - 1e-9:
            self._lead_up.popleft()

    def poll(self, now: float) -> str:
        """Read the player's key events, take over or hand back; returns who drives now."""
        pressed = self._read_events()
        watched = set(KEYS) | {self.s.takeover_key}
        if self._held & watched:
            self._last_input = now
        if self.driver == AGENT and pressed:
            self._take_over(now)
        elif self.driver == PLAYER and (self._key_released or (
                not self._held & watched and now - self._last_input >= self.s.handback_s)):
            self._hand_back()
        self._key_released = False
        return self.driver

    def _read_events(self) -> bool:
        """Apply the player's events (injected ones never count); True when one pressed a watched key."""
        pressed = False
        for event in self.player_events():
            if event.injected:
                continue
            if event.key in KEYS or event.key == self.s.takeover_key:
                pressed |= event.down and event.key not in self._held  # a key-repeat is no new press
                self._last_input = max(self._last_input, event.t)
            (self._held.add if event.down else self._held.discard)(event.key)
            if event.key == self.s.takeover_key and not event.down:
                self._key_released = True
        return pressed

    def record(self, frame: np.ndarray, t: float) -> bool:
        """A frame while the player drives, stored with the player's keys; False when skipped (too soon
        after the last one for the recording rate)."""
        self._read_events()  # the keys held at the frame's capture
        if self._writer is None or t - self._last_recorded < 1.0 / self.s.fps - 1e-9:
            return False
        keys = np.array([k in self._held for k in KEYS], dtype=np.uint8)
        self._writer.append(frame, keys, t - self._t0)
        self._last_recorded = t
        self.player_frames += 1
        self.observe(frame, t)  # a takeover soon after the hand-back gets these as its lead-up too
        return True

    def close(self, complete: bool = True) -> None:
        """End the correction in progress (if any); the agent would drive next."""
        if self._writer is not None:
            self._writer.close(complete=complete)
            self._writer = None
        self.driver = AGENT

    def _take_over(self, now: float) -> None:
        self.release_agent()  # first: the player's first recorded frame must not have the agent's keys in it
        self.driver = PLAYER
        lead_up = list(self._lead_up)
        self._lead_up.clear()
        path = self._new_path()
        meta = EpisodeMeta(fps=self.s.fps, kind=KIND, context_frames=len(lead_up), profile=self.profile,
                           source="takeover")
        self._writer = EpisodeWriter(path, self.frame_shape, meta, flush_seconds=self.s.flush_seconds)
        self._context_n = len(lead_up)
        self._t0 = lead_up[0][0] if lead_up else now
        if lead_up:  # keys 0: the agent's lead-up is never a label
            self._writer.append(np.stack([f for _, f in lead_up]), np.zeros((len(lead_up), 4), np.uint8),
                                np.array([t - self._t0 for t, _ in lead_up]))
        self._writer.flush()
        self._last_recorded = lead_up[-1][0] if lead_up else -math.inf
        self.episodes.append(path)
        self.log(f"player drives: recording {path} ({len(lead_up)} frames of lead-up)")

    def _hand_back(self) -> None:
        n = len(self._writer) - self._context_n
        self.close()
        self.log(f"agent drives ({n} frames of correction recorded)")

    def _new_path(self) -> Path:
        n = len(self.episodes)
        while (path := self.s.out_dir / f"{self.name}-{n:04d}.zarr").exists():
            n += 1
        return path
