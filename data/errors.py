"""The project's error type for expected mistakes, and the CLI wrapper that prints them in one line."""
import sys
from typing import Callable


class UserError(Exception):
    """A mistake the user can fix (bad file, wrong flag). CLIs print it as one line, no traceback."""


def run_cli(main: Callable[[], object]) -> None:
    """Run a CLI entry point; a UserError becomes `error: ...` on stderr and exit code 2."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
