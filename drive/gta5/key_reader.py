"""Reading the keys the player holds, by physical key (scan code), for the recorder and the hotkeys.

On Windows each scan code is mapped to a virtual key in the keyboard layout of the window that has focus
(MapVirtualKeyExW, MAPVK_VSC_TO_VK_EX) and read with GetAsyncKeyState: the key left of E reads as "w" on
QWERTY and on AZERTY (where it prints Z), the same scan codes SendInput presses when driving. Neither
needs a hook or admin rights. Elsewhere the `keyboard` package reads keys by name.
"""
import numpy as np

from data.errors import UserError
from data.key_input import KeyState
from data.labels import KEYS
from drive.gta5.scancodes import SCAN_CODES
from drive.gta5.win32 import WindowsApi


class ScanCodeKeys:
    """w/a/s/d and the watched hotkeys (names of drive.gta5.scancodes) by scan code, through a WindowsApi."""

    def __init__(self, api: WindowsApi, hotkeys: tuple[str, ...]):
        self.api, self.hotkeys = api, hotkeys

    def held(self, name: str) -> bool:
        vk = self.api.scan_to_vk(SCAN_CODES[name])
        return vk != 0 and self.api.key_down(vk)

    def poll(self) -> KeyState:
        wasd = np.array([self.held(k) for k in KEYS], dtype=np.uint8)
        return KeyState(wasd, frozenset(k for k in self.hotkeys if self.held(k)))


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


def default_key_source(api: WindowsApi | None, hotkeys: tuple[str, ...]):
    """Scan codes through Windows when there is a WindowsApi, the `keyboard` package otherwise."""
    return ScanCodeKeys(api, hotkeys) if api is not None else KeyboardPackageKeys(hotkeys)
