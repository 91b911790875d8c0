"""A ring buffer of timestamped items (per-frame features, or frames) and the seed's selection by time.

Training samples sequences at a fixed stride in seconds; live decisions do not arrive on that grid, so
each sequence slot takes the buffered item whose timestamp is closest to where the slot should be.
"""
from collections import deque
from typing import Any, NamedTuple


class Entry(NamedTuple):
    t: float
    item: Any


class RingBuffer:
    """At most `capacity` entries; with max_age_s, older entries are dropped once a newer one is at
    least that old (one entry at or beyond the age is kept, so the oldest slot still has a candidate)."""

    def __init__(self, capacity: int, max_age_s: float = float("inf")):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.entries: deque[Entry] = deque(maxlen=capacity)
        self.max_age_s = max_age_s

    def __len__(self) -> int:
        return len(self.entries)

    def push(self, t: float, item: Any) -> None:
        if self.entries and t < self.entries[-1].t:
            raise ValueError(f"timestamps must not go back: {t} after {self.entries[-1].t}")
        self.entries.append(Entry(t, item))
        while len(self.entries) > 1 and self.entries[1].t <= t - self.max_age_s:
            self.entries.popleft()

    def clear(self) -> None:
        self.entries.clear()

    def select(self, now: float, seq_len: int, stride_s: float) -> list[Entry]:
        """seq_len entries, oldest first; slot k from the end is the entry closest to now - k·stride_s.

        The seed's select_images: each slot searches only entries older than the one picked for the
        slot after it (so no entry is used twice and order is kept; a tie goes to the older entry), and
        while history is too short the oldest pick is repeated.
        """
        if not self.entries:
            raise ValueError("select on an empty ring buffer")
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        picked = []
        end = len(self.entries)  # search entries[:end]
        for k in range(seq_len):
            if end == 0:
                break
            target = now - k * stride_s
            best = min(range(end), key=lambda i: abs(self.entries[i].t - target))
            picked.append(self.entries[best])
            end = best
        picked += [picked[-1]] * (seq_len - len(picked))
        return picked[::-1]
