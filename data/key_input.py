"""Reading which keys the player holds: GetAsyncKeyState on Windows, the `keyboard` package elsewhere."""
import sys
from dataclasses import dataclass

import numpy as np

from data.errors import UserError
from data.labels import KEYS


@dataclass(frozen=True)
class KeyState:
    wasd: np.ndarray  # (4,) uint8: w, a, s, d held
    down: frozenset[str]  # the watched hotkeys that are held now


class WindowsKeys:
    """GetAsyncKeyState works whichever window has focus (the game), without hooks or admin rights."""

    def __init__(self, hotkeys: tuple[str, ...]):
        import ctypes

        self._state = ctypes.windll.user32.GetAsyncKeyState
        self.hotkeys = hotkeys

    def _held(self, key: str) -> bool:
        return bool(self._state(ord(key.upper())) & 0x8000)

    def poll(self) -> KeyState:
        wasd = np.array([self._held(k) for k in KEYS], dtype=np.uint8)
        return KeyState(wasd, frozenset(k for k in self.hotkeys if self._held(k)))


class KeyboardPackageKeys:
    """The `keyboard` package: needs root on Linux, accessibility rights on macOS."""

    def __init__(self, hotkeys: tuple[str, ...]):
        try:
            import keyboard

            keyboard.is_pressed("w")
        except (ImportError, OSError) as e:
            raise UserError(f"cannot read the keyboard ({e}); on Linux run as root, on macOS grant accessibility") from None
        self._kb, self.hotkeys = keyboard, hotkeys

    def poll(self) -> KeyState:
        wasd = np.array([self._kb.is_pressed(k) for k in KEYS], dtype=np.uint8)
        return KeyState(wasd, frozenset(k for k in self.hotkeys if self._kb.is_pressed(k)))


def default_key_source(hotkeys: tuple[str, ...]):
    return WindowsKeys(hotkeys) if sys.platform == "win32" else KeyboardPackageKeys(hotkeys)
