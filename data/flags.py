"""Flag syntax shared by every command line: track and training seeds, and renamed flags.

Seeds are written the same way everywhere: `0 1 2`, `1000-1009` (inclusive), `1,5-6`, or a mix of these.
A renamed flag keeps its old name for one release; using the old name prints one deprecation line."""
import argparse
import sys

from data.errors import UserError


def parse_seeds(text: str) -> list[int]:
    """'1000-1009' (inclusive), '3,7,9', '0 1 2' or a mix: '1-3,8 12'."""
    seeds = []
    try:
        for part in text.replace(",", " ").split():
            first, _, last = part.partition("-")
            seeds += list(range(int(first), int(last) + 1)) if last else [int(first)]
    except ValueError:
        raise UserError(f"--seeds {text!r}: expected A-B or a list, e.g. 1000-1009 or 0 1 2") from None
    if not seeds:
        raise UserError(f"--seeds {text!r}: names no seed (is A greater than B?)")
    return seeds


class Seeds(argparse.Action):
    """--seeds with nargs='+': the words joined and read by parse_seeds into a list of ints."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, parse_seeds(" ".join(values)))


class Renamed(argparse.Action):
    """Stores like the default action; option_strings[0] is the name, the others are deprecated old names
    that still work for one release and print one line saying so."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string != self.option_strings[0]:
            print(f"note: {option_string} is deprecated and goes in the next release; use {self.option_strings[0]}",
                  file=sys.stderr)
        setattr(namespace, self.dest, values)
