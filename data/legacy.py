"""Import the seed's HDF5 recordings (`images` (N,180,240,3) uint8 RGB, `labels` one-hot) as episodes."""
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from data.episode import EpisodeMeta, EpisodeWriter, is_episode_dir
from data.errors import PLACE_ERRORS, UserError, disk_error, require
from data.labels import legacy_to_wasd

STUCK_KIND = "stuck"


@dataclass(frozen=True)
class ImportSettings:
    fps: float = 80.0  # the seed recorded at 80 fps; timestamps are made from it (marked synthetic)
    stuck_pad_frames: int = 300  # leading frames of a stuck recording that no sample may use
    frame_shape: tuple[int, int, int] = (180, 240, 3)
    kind: str | None = None  # None: the name of the file's parent directory
    profile: str = "gta5"
    rows_per_read: int = 2000

    def __post_init__(self):
        require(1 <= self.fps <= 1000, "--fps", self.fps, "the recording rate, 1 to 1000 frames per second")
        require(self.stuck_pad_frames >= 0, "--stuck-pad-frames", self.stuck_pad_frames, ">= 0 frames")
        require(self.rows_per_read >= 1, "rows_per_read", self.rows_per_read, "at least 1")


@dataclass(frozen=True)
class LegacyFile:
    """A source file that passed validation, with its converted labels."""

    path: Path
    kind: str
    keys: np.ndarray  # (N, 4) uint8


def find_sources(sources: list[str | Path]) -> list[Path]:
    """Files as given; directories expand to the .h5 files directly inside them, sorted."""
    found = []
    for src in map(Path, sources):
        if src.is_dir():
            found.extend(sorted(p for p in src.iterdir() if p.suffix in (".h5", ".hdf5")))
        elif src.exists():
            found.append(src)
        else:
            raise UserError(f"{src}: no such file or directory")
    if not found:
        raise UserError(f"no .h5 files in {', '.join(map(str, sources))}")
    return found


def validate(path: Path, settings: ImportSettings) -> LegacyFile:
    """Check a source file completely before anything is written; convert its labels."""
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        missing = [name for name in ("images", "labels") if name not in f]
        if missing:
            raise UserError(f"{path}: no dataset {' or '.join(map(repr, missing))}; expected 'images' "
                            f"(N,{','.join(map(str, settings.frame_shape))}) uint8 and 'labels' (N,7)")
        images, labels = f["images"], f["labels"]
        if images.dtype != np.uint8 or images.shape[1:] != settings.frame_shape:
            raise UserError(f"{path}: images are {images.dtype} {images.shape}, expected uint8 "
                            f"(N,{','.join(map(str, settings.frame_shape))}) RGB")
        if len(images) != len(labels):
            raise UserError(f"{path}: {len(images)} images but {len(labels)} labels")
        if len(images) == 0:
            raise UserError(f"{path}: holds no frames")
        try:
            keys = legacy_to_wasd(labels[:])
        except ValueError as e:
            raise UserError(f"{path}: {e}") from None
    kind = settings.kind or path.parent.name or "regular"
    return LegacyFile(path=path, kind=kind, keys=keys)


def check_output_dir(out_dir: Path) -> None:
    """The output may hold episodes, grouped in kind folders, and nothing else."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a directory")
    for entry in out_dir.iterdir():
        inside = [entry] if is_episode_dir(entry) else list(entry.iterdir()) if entry.is_dir() else [entry]
        for item in inside:
            if not (is_episode_dir(item) or item.name.startswith(".")):
                raise UserError(f"{out_dir}: holds {item.relative_to(out_dir)}, which is not an episode "
                                "store; import into an empty directory or one with only episodes")


def import_file(source: LegacyFile, out_dir: Path, settings: ImportSettings, progress=None) -> Path | None:
    """Write one validated file as one episode; written beside its target and renamed when complete.

    Returns the episode path, or None when it was imported before.
    """
    target = out_dir / source.kind / f"{source.path.stem}.zarr"
    if target.exists():
        return None
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    n = len(source.keys)
    meta = EpisodeMeta(fps=settings.fps, kind=source.kind, profile=settings.profile,
                       pad_frames=settings.stuck_pad_frames if source.kind == STUCK_KIND else 0,
                       capture={"frame_size": [settings.frame_shape[1], settings.frame_shape[0]]},
                       source=f"imported from {source.path.resolve()}", synthetic_time=True)
    try:
        with h5py.File(source.path, "r") as f, EpisodeWriter(partial, settings.frame_shape, meta) as writer:
            for start in range(0, n, settings.rows_per_read):
                stop = min(n, start + settings.rows_per_read)
                writer.append(f["images"][start:stop], source.keys[start:stop], np.arange(start, stop) / settings.fps)
                if progress:
                    progress(stop - start)
            writer.close(fps=settings.fps)
        os.rename(partial, target)
    except BaseException as e:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in PLACE_ERRORS:
            raise disk_error(e, out_dir, kept="the files imported before are kept: rerun to continue") from None
        if isinstance(e, OSError) and e.errno is None:  # h5py's read errors carry no errno
            raise UserError(f"{source.path}: damaged HDF5 file, cannot read its frames ({e}); "
                            f"leave it out or copy it again") from None
        raise
    return target
