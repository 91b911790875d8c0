"""Every file the project writes is written whole or not at all: to a temporary file beside the target,
then renamed over it (os.replace is atomic within a folder). A crash or a failed write leaves the previous
file (or none) and no temporary file behind. Folders (episodes, caches) have their own rename in their
writers; this is for single files.
"""
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from data.errors import UserError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed over `path` when the block ends without an
    error, removed when it raises. The temporary name keeps the suffix, for writers that pick the format
    from it (matplotlib, cv2). Creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes, fsync: bool = False) -> Path:
    """fsync: also flush the bytes to the disk before the rename (for files a power cut must not lose)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path: str | Path, value, **dumps) -> Path:
    """json.dumps(value, **dumps) plus a final newline."""
    return write_text(path, json.dumps(value, **dumps) + "\n")


def write_jsonl(path: str | Path, records) -> Path:
    """One JSON object per line."""
    return write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def write_image(path: str | Path, rgb, name: str | None = None) -> Path:
    """An RGB uint8 array as an image in the format of the suffix (.png, .jpg). cv2 reports a failed write
    only by returning False: that becomes a UserError naming `name` (a flag and its value) or the path."""
    import cv2

    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise UserError(f"{name or path}: could not be written (disk full or not writable?)")
    return Path(path)


def save_figure(path: str | Path, fig, **savefig) -> Path:
    """A matplotlib figure, in the format of the suffix."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **savefig)
    return Path(path)


def save_torch(path: str | Path, value, fsync: bool = True) -> Path:
    """torch.save(value), flushed to the disk before the rename by default (checkpoints)."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(value, f)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    return Path(path)
