"""Hotkeys for the live loop, read from a key source (scan codes on Windows) by a polling thread."""
import threading
import time
from typing import Callable

from drive.loop import HotkeyQueue


class HotkeyPoller(HotkeyQueue):
    """Hotkeys for the live loop: a thread polls a key source every poll_s and queues each new press,
    so a tap shorter than a decision is not missed. close() stops it."""

    def __init__(self, keys, poll_s: float = 0.01, sleep: Callable[[float], None] = time.sleep):
        super().__init__()
        self.keys, self.poll_s, self.sleep = keys, poll_s, sleep
        self._down: frozenset[str] = frozenset()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hotkeys", daemon=True)
        self._thread.start()

    def poll_once(self) -> None:
        down = self.keys.poll().down
        for name in sorted(down - self._down):
            self.put(name)
        self._down = down

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self.sleep(self.poll_s)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
