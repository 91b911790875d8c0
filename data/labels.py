"""Key labels: w, a, s, d as 0/1, and the seed's legacy one-hot classes."""
import numpy as np

KEYS = ("w", "a", "s", "d")
W, A, S, D = range(4)

# The seed recorded one class per frame: one-hot over these seven.
LEGACY7 = ("w", "a", "s", "d", "wa", "wd", "nothing")
# Older layout: one-hot over w, a, s, d, nothing.
LEGACY5 = ("w", "a", "s", "d", "nothing")


def legacy_to_wasd(labels: np.ndarray) -> np.ndarray:
    """(N, 7) or (N, 5) one-hot classes, or (N, 4) multi-hot w/a/s/d → (N, 4) uint8 multi-hot.

    w = w|wa|wd, a = a|wa, s = s, d = d|wd (the seed's conversion). Raises ValueError on anything
    that is not 0/1, or not one-hot for the 5- and 7-class layouts.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] not in (4, 5, 7):
        raise ValueError(f"labels must have shape (N, 7), (N, 5) or (N, 4), got {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels hold values other than 0 and 1")
    hot = labels.astype(bool)
    if labels.shape[1] == 4:
        return hot.astype(np.uint8)
    rows_hot = hot.sum(axis=1)
    if (rows_hot != 1).any():
        first = int(np.flatnonzero(rows_hot != 1)[0])
        raise ValueError(f"labels are not one-hot (row {first} has {int(rows_hot[first])} classes set)")
    out = np.zeros((len(labels), 4), dtype=np.uint8)
    out[:, W] = hot[:, 0]
    out[:, A] = hot[:, 1]
    out[:, S] = hot[:, 2]
    out[:, D] = hot[:, 3]
    if labels.shape[1] == 7:
        out[:, W] |= hot[:, 4] | hot[:, 5]
        out[:, A] |= hot[:, 4]
        out[:, D] |= hot[:, 5]
    return out


def keys_text(keys: np.ndarray) -> str:
    """[1, 0, 0, 1] → 'w--d'."""
    return "".join(k if on else "-" for k, on in zip(KEYS, keys))
