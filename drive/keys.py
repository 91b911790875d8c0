"""Key output: sinks that press and release w/a/s/d, one scheduler for timed releases, release-all safety.

A hold plan (see drive.controller) is applied by KeyScheduler: releases first, then presses, and one
background thread releases keys whose time is up. Every path out of a drive (quit, pause, exception,
Ctrl-C, SIGTERM, interpreter exit) ends in KeyScheduler.release_all.
"""
import atexit
import ctypes
import heapq
import importlib
import math
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Protocol

from data.errors import UserError
from data.labels import KEYS

# DirectInput scan codes: games reading raw input (GTA V) ignore virtual-key events.
SCAN_CODES = {"w": 0x11, "a": 0x1E, "s": 0x1F, "d": 0x20}


class KeySink(Protocol):
    def press(self, key: str) -> None: ...

    def release(self, key: str) -> None: ...


class KeyOutput(Protocol):
    """What the live loop drives: KeyScheduler, or an adapter for a game that takes hold plans itself."""

    clock: Callable[[], float]

    def apply(self, hold: dict[str, float], now: float | None = None) -> None: ...

    def release_all(self) -> None: ...

    def held_keys(self) -> frozenset[str]: ...

    def held_seconds(self, now: float | None = None) -> dict[str, float]: ...


class RecordingSink:
    """A virtual keyboard: records (time, key, "down"/"up") events and knows which keys are down.

    Used by tests and the embedded game. `on_event(time, key, kind)` is called after each event.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter,
                 on_event: Callable[[float, str, str], None] | None = None):
        self.clock = clock
        self.on_event = on_event
        self.events: list[tuple[float, str, str]] = []
        self.down: set[str] = set()
        self._lock = threading.Lock()

    def press(self, key: str) -> None:
        self._record(key, "down")

    def release(self, key: str) -> None:
        self._record(key, "up")

    def _record(self, key: str, kind: str) -> None:
        with self._lock:
            t = self.clock()
            self.events.append((t, key, kind))
            (self.down.add if kind == "down" else self.down.discard)(key)
        if self.on_event is not None:
            self.on_event(t, key, kind)


# SendInput structures, sized for the running interpreter (INPUT is 40 bytes on 64-bit Windows).
class _MouseInput(ctypes.Structure):
    _fields_ = [("dx", ctypes.c_int32), ("dy", ctypes.c_int32), ("mouseData", ctypes.c_uint32),
                ("dwFlags", ctypes.c_uint32), ("time", ctypes.c_uint32), ("dwExtraInfo", ctypes.c_size_t)]


class _KeybdInput(ctypes.Structure):
    _fields_ = [("wVk", ctypes.c_uint16), ("wScan", ctypes.c_uint16), ("dwFlags", ctypes.c_uint32),
                ("time", ctypes.c_uint32), ("dwExtraInfo", ctypes.c_size_t)]


class _HardwareInput(ctypes.Structure):
    _fields_ = [("uMsg", ctypes.c_uint32), ("wParamL", ctypes.c_uint16), ("wParamH", ctypes.c_uint16)]


class _InputUnion(ctypes.Union):
    _fields_ = [("mi", _MouseInput), ("ki", _KeybdInput), ("hi", _HardwareInput)]


class _Input(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("u", _InputUnion)]


INPUT_KEYBOARD = 1
KEYEVENTF_KEYUP = 0x0002
KEYEVENTF_SCANCODE = 0x0008


def scan_code_input(key: str, up: bool) -> _Input:
    """The INPUT record SendInput needs to press (up=False) or release a key by its scan code."""
    flags = KEYEVENTF_SCANCODE | (KEYEVENTF_KEYUP if up else 0)
    return _Input(type=INPUT_KEYBOARD, u=_InputUnion(ki=_KeybdInput(wScan=SCAN_CODES[key], dwFlags=flags)))


class WindowsSendInputSink:
    """Presses keys with SendInput and DirectInput scan codes (Windows only)."""

    def __init__(self):
        if sys.platform != "win32":
            raise UserError("--keys sendinput works on Windows only; use --keys keyboard or --keys virtual")
        self._user32 = ctypes.WinDLL("user32", use_last_error=True)

    def _send(self, key: str, up: bool) -> None:
        record = scan_code_input(key, up)
        if self._user32.SendInput(1, ctypes.byref(record), ctypes.sizeof(record)) != 1:
            raise OSError(f"SendInput failed for {key!r} (error {ctypes.get_last_error()}); "
                          "if the game runs as administrator, run this as administrator too")

    def press(self, key: str) -> None:
        self._send(key, up=False)

    def release(self, key: str) -> None:
        self._send(key, up=True)


class KeyboardPackageSink:
    """Presses keys through the `keyboard` package (fallback outside Windows; needs root on Linux)."""

    def __init__(self):
        try:
            self._keyboard = importlib.import_module("keyboard")
        except ImportError:
            raise UserError("--keys keyboard needs the `keyboard` package: pip install keyboard") from None

    def press(self, key: str) -> None:
        self._keyboard.press(key)

    def release(self, key: str) -> None:
        self._keyboard.release(key)


class KeyScheduler:
    """Applies hold plans to a sink; ONE background thread releases keys when their time is up.

    Clock times are `clock()` seconds (time.perf_counter by default). With start_thread=False no
    thread runs and the owner calls release_due(now) itself (tests, simulated time).
    """

    def __init__(self, sink: KeySink, clock: Callable[[], float] = time.perf_counter, start_thread: bool = True):
        self.sink = sink
        self.clock = clock
        self._cond = threading.Condition(threading.RLock())  # re-entrant: signal handlers run on the main thread
        self._heap: list[tuple[float, int, str]] = []  # (release time, token, key)
        self._token = dict.fromkeys(KEYS, 0)  # a heap entry counts only while its token is current
        self._seq = 0
        self._down_since: dict[str, float] = {}
        self._held_s = dict.fromkeys(KEYS, 0.0)
        self._closed = False
        self.thread_error: BaseException | None = None
        atexit.register(self.release_all)
        self._thread = None
        if start_thread:
            self._thread = threading.Thread(target=self._run, name="key-releases", daemon=True)
            self._thread.start()

    def apply(self, hold: dict[str, float], now: float | None = None) -> None:
        """Make the keys follow `hold` (seconds from `now`; 0 releases, math.inf holds until changed)."""
        unknown = set(hold) - set(KEYS)
        if unknown:
            raise ValueError(f"unknown keys in hold plan: {sorted(unknown)}")
        with self._cond:
            if self.thread_error is not None:
                raise RuntimeError("the key release thread failed") from self.thread_error
            now = self.clock() if now is None else now
            plan = {k: float(hold.get(k, 0.0)) for k in KEYS}
            for key, seconds in plan.items():  # releases before presses: opposite keys never overlap
                if not seconds > 0:
                    self._cancel(key)
                    self._release(key, now)
            for key, seconds in plan.items():
                if seconds > 0:
                    self._cancel(key)
                    self._press(key, now)
                    if not math.isinf(seconds):
                        self._seq += 1
                        self._token[key] = self._seq
                        heapq.heappush(self._heap, (now + seconds, self._seq, key))
            self._cond.notify()

    def release_due(self, now: float | None = None) -> list[str]:
        """Release every key whose time is up at `now`; returns the keys released."""
        with self._cond:
            now = self.clock() if now is None else now
            released = []
            while self._heap and self._heap[0][0] <= now:
                due, token, key = heapq.heappop(self._heap)
                if self._token[key] == token:
                    self._cancel(key)
                    self._release(key, now)
                    released.append(key)
            return released

    def release_all(self) -> None:
        """Release every held key and drop pending releases; tries every key even if the sink fails."""
        with self._cond:
            now = self.clock()
            self._heap.clear()
            failure = None
            for key in list(self._down_since):
                self._token[key] = 0
                try:
                    self._release(key, now)
                except Exception as e:  # keep releasing the other keys
                    failure = failure or e
            self._cond.notify()
        if failure is not None:
            raise failure

    def held_keys(self) -> frozenset[str]:
        with self._cond:
            return frozenset(self._down_since)

    def pending_releases(self) -> dict[str, float]:
        """Key → scheduled release time, for keys held for a finite time."""
        with self._cond:
            return {key: due for due, token, key in self._heap if self._token[key] == token}

    def held_seconds(self, now: float | None = None) -> dict[str, float]:
        """Total seconds each key has been down since the scheduler started."""
        with self._cond:
            now = self.clock() if now is None else now
            return {k: self._held_s[k] + (now - self._down_since[k] if k in self._down_since else 0.0)
                    for k in KEYS}

    def close(self) -> None:
        """Release everything and stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        try:
            self.release_all()
        finally:
            if self._thread is not None:
                self._thread.join(timeout=5)
            atexit.unregister(self.release_all)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _press(self, key: str, now: float) -> None:
        if key not in self._down_since:
            self._down_since[key] = now  # marked first: a press that fails half-way still gets released
            self.sink.press(key)

    def _release(self, key: str, at: float) -> None:
        if key in self._down_since:
            self._held_s[key] += max(0.0, at - self._down_since.pop(key))
            self.sink.release(key)

    def _cancel(self, key: str) -> None:
        self._token[key] = 0

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                try:
                    self.release_due()
                except BaseException as e:  # surfaced by the next apply()
                    self.thread_error = e
                    try:
                        self.release_all()
                    except BaseException:
                        pass
                    return
                live = [due for due, token, key in self._heap if self._token[key] == token]
                timeout = None if not live else max(0.0, min(live) - self.clock())
                self._cond.wait(timeout)


class Terminated(SystemExit):
    """Raised in the main thread when the process is asked to stop (SIGTERM, SIGHUP)."""


def _raise_terminated(signum, frame):
    raise Terminated(128 + signum)


@contextmanager
def release_keys_on_exit(scheduler: KeyOutput):
    """Inside: SIGTERM/SIGHUP become a Terminated exception; on the way out (normally, on any
    exception, Ctrl-C or a signal) every key is released and the previous handlers are restored.
    Signal handlers are only installed when called from the main thread."""
    wanted = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGBREAK") if hasattr(signal, name)]
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in wanted:
            previous[signum] = signal.signal(signum, _raise_terminated)
    try:
        yield scheduler
    finally:
        try:
            scheduler.release_all()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
