"""An index over episodes found under several root directories (the seed mixed new_data, turns, stuck)."""
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from data.episode import Episode, is_episode_dir
from data.errors import UserError


@dataclass(frozen=True)
class EpisodeInfo:
    path: Path
    kind: str
    n_frames: int
    fps: float
    pad_frames: int
    complete: bool
    profile: str

    @property
    def duration(self) -> float:
        return self.n_frames / self.fps if self.fps else 0.0


def _candidates(root: Path):
    """Directories under root that hold a zarr.json, without descending into Zarr groups."""
    if (root / "zarr.json").exists():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        keep = []
        for d in dirnames:
            sub = Path(dirpath) / d
            if (sub / "zarr.json").exists():
                yield sub
            elif not d.startswith("."):
                keep.append(d)
        dirnames[:] = keep


def index_episodes(roots: list[str | Path], kinds: list[str] | None = None,
                   strict: bool = False) -> list[EpisodeInfo]:
    """Every episode under the roots, sorted by path, optionally only those of the given kinds.

    A damaged episode or a foreign Zarr store is skipped with a warning on stderr, so one bad
    recording does not block a dataset; with strict=True it is an error instead.
    """
    found = []
    for root in map(Path, roots):
        if not root.is_dir():
            raise UserError(f"{root}: {'is a file, not' if root.exists() else 'no such'} recordings directory")
        for path in _candidates(root):
            try:
                if not is_episode_dir(path):
                    raise UserError(f"{path}: a Zarr store that is not an episode")
                ep = Episode(path)
            except UserError as e:
                if strict:
                    raise
                print(f"warning: skipping {e}", file=sys.stderr)
                continue
            if kinds and ep.kind not in kinds:
                continue
            found.append(episode_info(ep))
    return sorted(found, key=lambda info: str(info.path))


def episode_info(ep: Episode) -> EpisodeInfo:
    return EpisodeInfo(path=ep.path, kind=ep.kind, n_frames=ep.n_frames, fps=float(ep.attrs.get("fps", 0.0)),
                       pad_frames=ep.pad_frames, complete=ep.complete, profile=ep.profile)
