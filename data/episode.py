"""The episode store: one Zarr v3 group per recording session, time on axis 0 of every array.

    frames  uint8   (T, H, W, 3) RGB, chunked ~1 s, lossless (Blosc zstd)
    keys    uint8   (T, 4)       w, a, s, d held (0/1)
    t       float64 (T,)         seconds since the episode start

The attribute `n_frames` is written after the rows it counts, so an episode cut off mid-recording
(crash, kill, power loss) is readable up to its last flush and says `complete: false`.
"""
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from data.errors import UserError
from data.labels import KEYS

FORMAT = "gta-drive-episode"
FORMAT_VERSION = 1


@dataclass
class EpisodeMeta:
    """What an episode says about itself, besides its arrays."""

    fps: float  # measured (or, for imports, declared) frames per second
    kind: str = "regular"  # regular, stuck, turns, or any user label
    pad_frames: int = 0  # leading frames that no sample may use (stuck recordings)
    context_frames: int = 0  # leading frames a sample may take as input, never as its label (a correction's lead-up)
    profile: str = ""  # game profile name
    capture: dict = field(default_factory=dict)  # capture geometry: region, capture and frame size
    source: str = "recorded"  # "recorded", "expert", or "imported from <file>"
    synthetic_time: bool = False  # True when t was made from fps, not measured


def is_episode_dir(path: Path) -> bool:
    """Cheap check (no zarr open): does this directory hold an episode group?"""
    meta = Path(path) / "zarr.json"
    try:
        return json.loads(meta.read_text()).get("attributes", {}).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


class EpisodeWriter:
    """Appends frames, keys and timestamps; flushes at least every `flush_seconds`.

    Use as a context manager: a clean exit marks the episode complete, an exception leaves it
    incomplete (but readable up to the last flush).
    """

    def __init__(self, path: str | Path, frame_shape: tuple[int, int, int], meta: EpisodeMeta,
                 flush_seconds: float = 1.0):
        self.path = Path(path)
        if self.path.exists():
            raise UserError(f"{self.path}: already exists; episodes are never overwritten, choose a new name")
        h, w, c = frame_shape
        if c != 3:
            raise ValueError(f"frames must be RGB (H, W, 3), got {frame_shape}")
        self.frame_shape = (h, w, c)
        self.flush_seconds = flush_seconds
        self.chunk = max(1, round(meta.fps))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.group = zarr.open_group(self.path, mode="w-", zarr_format=3)
        lossless = BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")
        every = {"write_empty_chunks": True}  # a missing chunk file then always means damage, never zeros
        self.frames = self.group.create_array("frames", shape=(0, h, w, 3), chunks=(self.chunk, h, w, 3),
                                              dtype="uint8", compressors=lossless, config=every)
        self.keys = self.group.create_array("keys", shape=(0, 4), chunks=(self.chunk * 64, 4), dtype="uint8",
                                            config=every)
        self.t = self.group.create_array("t", shape=(0,), chunks=(self.chunk * 64,), dtype="float64", config=every)
        self.group.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "keys": list(KEYS),
                                 **asdict(meta), "complete": False, "n_frames": 0,
                                 "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
        self.n_frames = 0
        self._buffer: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._buffered = 0
        self._last_flush = time.monotonic()
        self.closed = False

    def append(self, frames: np.ndarray, keys: np.ndarray, t: float | np.ndarray) -> None:
        """One frame (H, W, 3) with keys (4,) and a time, or a batch (N, H, W, 3), (N, 4), (N,)."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames, keys, t = frames[None], np.asarray(keys)[None], np.atleast_1d(t)
        keys, t = np.asarray(keys), np.asarray(t, dtype=np.float64)
        if frames.dtype != np.uint8 or frames.shape[1:] != self.frame_shape:
            raise ValueError(f"frames must be uint8 {self.frame_shape}, got {frames.dtype} {frames.shape[1:]}")
        if keys.shape != (len(frames), 4) or t.shape != (len(frames),):
            raise ValueError(f"need keys (N, 4) and t (N,) for {len(frames)} frames, got {keys.shape}, {t.shape}")
        self._buffer.append((frames, keys.astype(np.uint8), t))
        self._buffered += len(frames)
        if self._buffered >= self.chunk or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write buffered rows, then publish the new row count."""
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        frames, keys, t = (np.concatenate(parts) for parts in zip(*self._buffer))
        self._buffer, self._buffered = [], 0
        start, stop = self.n_frames, self.n_frames + len(frames)
        for array, rows in ((self.frames, frames), (self.keys, keys), (self.t, t)):
            array.resize((stop, *array.shape[1:]))
            array[start:stop] = rows
        self.n_frames = stop
        self.group.attrs["n_frames"] = stop

    def __len__(self) -> int:
        """Rows appended so far, flushed or not."""
        return self.n_frames + self._buffered

    def discard_last(self, seconds: float) -> int:
        """Drop the frames of the last `seconds` (a botched moment before pause). Returns how many."""
        self.flush()
        if self.n_frames == 0 or seconds <= 0:
            return 0
        t = self.t[:self.n_frames]
        keep = int(np.searchsorted(t, t[-1] - seconds, side="right"))
        dropped = self.n_frames - keep
        self.group.attrs["n_frames"] = keep  # publish first: a crash in between leaves a valid episode
        for array in (self.frames, self.keys, self.t):
            array.resize((keep, *array.shape[1:]))
        self.n_frames = keep
        return dropped

    def close(self, complete: bool = True, **attrs) -> None:
        """Flush, update attributes (measured fps, ...) and mark complete."""
        if self.closed:
            return
        self.flush()
        if complete and self.n_frames >= 2 and "fps" not in attrs:
            t = self.t[:self.n_frames]
            if t[-1] > t[0]:
                attrs["fps"] = float((self.n_frames - 1) / (t[-1] - t[0]))
        self.group.attrs.update({**attrs, "complete": bool(complete)})
        self.closed = True

    def __enter__(self) -> "EpisodeWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(complete=exc_type is None)


class Rows:
    """A zarr array seen only up to row `n` on axis 0: rows past the last flush do not exist.
    A chunk that fails to decode is a UserError naming the array (`where`)."""

    def __init__(self, array: zarr.Array, n: int, where: Path | str = "array"):
        self.array, self.n, self.where = array, n, where
        self.shape = (n, *array.shape[1:])
        self.dtype = array.dtype

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key):
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if isinstance(first, slice):
            first = slice(*first.indices(self.n))
        elif isinstance(first, (int, np.integer)):
            if not -self.n <= first < self.n:
                raise IndexError(f"row {first} out of range for {self.n} rows")
            first = int(first) % self.n
        else:
            raise TypeError("index rows with an int or a slice")
        try:
            return self.array[(first, *rest)]
        except (IndexError, TypeError):  # a wrong index, not damage
            raise
        except Exception as e:  # numcodecs / zarr raise many types for a damaged chunk
            rows = f"{first.start}..{first.stop - 1}" if isinstance(first, slice) else first
            raise UserError(f"{self.where}: damaged data, cannot decode rows {rows} "
                            f"({type(e).__name__}: {e}); re-record or delete this episode") from None

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def _chunk_problem(folder: Path, array: zarr.Array, n: int) -> str | None:
    """What is wrong with the chunk files that rows [0, n) need: absent, or (Blosc) shorter than the size
    written in their header. None when they look whole."""
    blosc = any(isinstance(c, BloscCodec) for c in array.metadata.codecs)
    for chunk in range(-(-n // array.chunks[0])):
        key = array.metadata.encode_chunk_key((chunk,) + (0,) * (array.ndim - 1))
        try:
            with open(folder / key, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                header = f.read(16) if blosc else b""
        except FileNotFoundError:
            return f"{folder.name} chunk {key} is missing (rows {chunk * array.chunks[0]}...)"
        if blosc and (len(header) < 16 or int.from_bytes(header[12:16], "little") != size):
            return f"{folder.name} chunk {key} is truncated ({size} bytes)"
    return None


class Episode:
    """One episode, opened lazily: arrays are read only when sliced."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not is_episode_dir(self.path):
            raise UserError(f"{self.path}: not an episode store (no zarr.json with format '{FORMAT}')")
        try:
            group = zarr.open_group(self.path, mode="r")
            self.attrs = dict(group.attrs)
            arrays = {name: group[name] for name in ("frames", "keys", "t")}
        except Exception as e:  # zarr raises many types for damaged stores
            raise UserError(f"{self.path}: corrupt episode store ({type(e).__name__}: {e})") from None
        if self.attrs.get("format_version", 0) > FORMAT_VERSION:
            raise UserError(f"{self.path}: episode format {self.attrs['format_version']} is newer than this "
                            f"tool ({FORMAT_VERSION}); update the tool")
        n = int(self.attrs.get("n_frames", 0))
        frames, keys, t = arrays["frames"], arrays["keys"], arrays["t"]
        if frames.ndim != 4 or frames.shape[3] != 3 or keys.shape[1:] != (4,) or t.ndim != 1:
            raise UserError(f"{self.path}: corrupt episode store (array shapes {frames.shape}, {keys.shape}, {t.shape})")
        if min(frames.shape[0], keys.shape[0], t.shape[0]) < n:
            raise UserError(f"{self.path}: corrupt episode store (n_frames={n} but arrays hold fewer rows)")
        self.n_frames = n
        self.frames, self.keys, self.t = (Rows(a, n, self.path / name) for name, a in arrays.items())
        self._check(arrays)

    def _check(self, arrays: dict[str, zarr.Array]) -> None:
        """Refuse what would otherwise be read as something else: a missing or truncated chunk (zarr reads
        a missing one as zeros), labels other than 0/1, timestamps that are not finite and increasing.
        Reads keys and t (small) and the first bytes of each frame chunk, never the frames themselves."""
        fps, pad = self.attrs.get("fps"), self.attrs.get("pad_frames", 0)
        if not (isinstance(fps, (int, float)) and 0 < fps < math.inf):
            raise UserError(f"{self.path}: its fps attribute is {fps!r}, not a positive number; re-record or re-import it")
        if not (isinstance(pad, int) and pad >= 0) or self.n_frames < 0:
            raise UserError(f"{self.path}: pad_frames {pad!r} or n_frames {self.n_frames} is not a count of frames; "
                            f"re-record or re-import it")
        for name, want in (("frames", "uint8"), ("keys", "uint8")):
            if arrays[name].dtype != np.dtype(want):
                raise UserError(f"{self.path}: {name} are {arrays[name].dtype}, not {want}; re-record or re-import it")
        if arrays["t"].dtype.kind != "f":
            raise UserError(f"{self.path}: timestamps are {arrays['t'].dtype}, not float; re-record or re-import it")
        for name, array in arrays.items():
            problem = _chunk_problem(self.path / name, array, self.n_frames)
            if problem:
                raise UserError(f"{self.path}: {problem}; the recording is damaged: re-record or delete it")
        keys, t = self.keys[:], self.t[:]
        if keys.size and keys.max() > 1:
            raise UserError(f"{self.path}: keys hold values other than 0 and 1 (max {keys.max()}); re-record or re-import it")
        if not np.isfinite(t).all():
            raise UserError(f"{self.path}: timestamps are not all finite (row {int(np.argmin(np.isfinite(t)))}); "
                            f"re-record or re-import it")
        if len(t) > 1 and not (np.diff(t) > 0).all():
            raise UserError(f"{self.path}: timestamps go backwards or stand still at row "
                            f"{int(np.argmin(np.diff(t) > 0)) + 1}; re-record or re-import it")

    def __len__(self) -> int:
        return self.n_frames

    def __repr__(self) -> str:
        return f"Episode({str(self.path)!r}, kind={self.kind!r}, frames={self.n_frames})"

    def read(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frames, keys and t of rows [start, stop) in one contiguous read each."""
        return self.frames[start:stop], self.keys[start:stop], self.t[start:stop]

    def digest(self) -> str:
        """A fingerprint of the recording that changes when it is re-recorded or edited.

        Hashes labels, timestamps and attributes in full, and the size of every compressed frame
        chunk (hashing every pixel would mean reading the whole dataset on each check).
        """
        h = hashlib.sha256()
        h.update(json.dumps({k: self.attrs.get(k) for k in ("n_frames", "fps", "kind", "pad_frames")},
                            sort_keys=True).encode())
        h.update(np.ascontiguousarray(self.keys[:]).tobytes())
        h.update(np.ascontiguousarray(self.t[:]).tobytes())
        chunks = self.path / "frames" / "c"
        for f in sorted(chunks.rglob("*")) if chunks.exists() else []:
            if f.is_file():
                h.update(f"{f.relative_to(chunks)}:{f.stat().st_size};".encode())
        return h.hexdigest()[:16]

    @property
    def kind(self) -> str:
        return self.attrs.get("kind", "regular")

    @property
    def fps(self) -> float:
        return float(self.attrs["fps"])

    @property
    def pad_frames(self) -> int:
        return int(self.attrs.get("pad_frames", 0))

    @property
    def context_frames(self) -> int:
        return int(self.attrs.get("context_frames", 0))

    @property
    def complete(self) -> bool:
        return bool(self.attrs.get("complete", False))

    @property
    def profile(self) -> str:
        return self.attrs.get("profile", "")

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return tuple(self.frames.shape[1:])
