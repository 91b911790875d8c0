"""One progress bar style for every long step a user waits on (extraction, PCA, training, replay, evaluation).

tqdm on stderr with the count, rate and ETA; shown only on a terminal (tqdm's disable=None), so logs, pipes
and tests stay free of bar redraws, and `enabled=False` (a --quiet run, a non-zero rank) hides it."""
import sys

from tqdm import tqdm


def progress(iterable=None, *, total: int | None = None, desc: str, unit: str, initial: int = 0,
             enabled: bool = True) -> tqdm:
    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr, dynamic_ncols=True,
                disable=None if enabled else True, smoothing=0.1)


def say_above(bar: tqdm):
    """A print for lines that must stay readable while `bar` runs: written above the bar, never through it."""
    return lambda text="": bar.write(str(text), file=sys.stdout) if not bar.disable else print(text)
