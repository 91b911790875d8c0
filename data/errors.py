"""The project's error type for expected mistakes, and the CLI wrapper that prints them in one line."""
import errno
import sys
from contextlib import contextmanager
from typing import Callable

# Faults of the disk or of the paths the user gave, not of this program: reported in one line.
DISK_ERRORS = {errno.ENOSPC: "the disk is full; free space", errno.EDQUOT: "the disk quota is used up; free space",
               errno.EROFS: "read-only file system; choose a writable place",
               errno.EACCES: "permission denied; choose a place you may write to",
               errno.EPERM: "permission denied; choose a place you may write to",
               errno.ENOTDIR: "a file stands where a directory should be; move it or choose another path",
               errno.EISDIR: "a directory stands where a file should be; choose a file name",
               errno.EEXIST: "already exists as a file; move it or choose another path",
               errno.ENOENT: "no such file or directory", errno.EIO: "input/output error (a failing disk?)"}
# ... of those, the ones about the place written to rather than one path: named by the folder the user gave
PLACE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


class UserError(Exception):
    """A mistake the user can fix (bad file, wrong flag). CLIs print it as one line, no traceback."""


def require(ok: bool, flag: str, value, rule: str) -> None:
    """Refuse an option value: `{flag} {value}: must be {rule}`. Write `ok` so that NaN fails it."""
    if not ok:
        raise UserError(f"{flag} {value}: must be {rule}")


def disk_error(e: OSError, path=None, kept: str = "") -> UserError:
    """One line for an OSError of the disk or a path: the path the user gave (else the error's), what
    happened, what to do, and what was kept."""
    where = path or e.filename or "a file"
    what = DISK_ERRORS.get(e.errno, e.strerror or str(e))
    return UserError(f"{where}: {what}" + (f"; {kept}" if kept else ""))


@contextmanager
def disk_faults(path, kept: str = ""):
    """Within: a fault of the place written to (PLACE_ERRORS) becomes disk_error naming `path` and saying
    what was kept. Other path errors keep their own file name (run_cli prints them)."""
    try:
        yield
    except OSError as e:
        if e.errno not in PLACE_ERRORS:
            raise
        raise disk_error(e, path, kept) from None


def run_cli(main: Callable[[], object]) -> None:
    """Run a CLI entry point; a UserError (or a disk fault) becomes `error: ...` on stderr and exit code 2."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        print(f"error: {disk_error(e)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
