"""Key output to the game: SendInput with scan codes, and a guard that presses only while the game has focus."""
from typing import Callable

from drive.gta5.scancodes import SCAN_CODES
from drive.gta5.win32 import WindowsApi
from drive.keys import KeySink


class SendInputSink:
    """Presses w/a/s/d by scan code: games reading raw input (GTA V) ignore virtual-key events."""

    def __init__(self, api: WindowsApi):
        self.api = api

    def press(self, key: str) -> None:
        self.api.send_scan_code(SCAN_CODES[key], up=False)

    def release(self, key: str) -> None:
        self.api.send_scan_code(SCAN_CODES[key], up=True)


class FocusedOnlySink:
    """Passes presses on only while `focused()`: a key never goes down in another window (the terminal).
    Releases always pass."""

    def __init__(self, sink: KeySink, focused: Callable[[], bool]):
        self.sink, self.focused = sink, focused
        self.skipped = 0

    def press(self, key: str) -> None:
        if self.focused():
            self.sink.press(key)
        else:
            self.skipped += 1

    def release(self, key: str) -> None:
        self.sink.release(key)
