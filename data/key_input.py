"""What a key source tells the recorder per poll; the readers are in drive.gta5.key_reader."""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KeyState:
    wasd: np.ndarray  # (4,) uint8: w, a, s, d held
    down: frozenset[str]  # the watched hotkeys that are held now
