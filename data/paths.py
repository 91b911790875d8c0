"""Up-front checks of the files a command will write, so that a bad path fails before any work is done."""
import os
from pathlib import Path

from data.errors import UserError


def check_writable(path: str | Path, flag: str, suffixes: tuple[str, ...] = ()) -> Path:
    """Refuse an output file that cannot be written: wrong suffix, a directory in its place, a file where
    one of its folders should be, or a first existing folder that is read-only."""
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise UserError(f"{flag} {path}: must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a directory; give a file name")
    _check_can_create(path, path.parent, flag)
    return path


def check_output_folder(path: str | Path, flag: str) -> Path:
    """Refuse an output folder that cannot be made or written: a file in its place or where one of its
    parents should be, or a first existing parent that is read-only."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path}: is a file; give a folder")
    _check_can_create(path, path, flag)
    return path


def _check_can_create(path: Path, folder: Path, flag: str) -> None:
    """The first existing folder at or above `folder` must be a writable folder."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"{flag} {path}: {folder} is a file, not a folder; choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: {folder} is not writable (read-only or no permission); choose another path")
