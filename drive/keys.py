"""Key output: sinks that press and release w/a/s/d, one scheduler for timed releases, release-all safety.

A hold plan (see drive.controller) is applied by KeyScheduler: releases first, then presses, and one
background thread releases keys whose time is up. Every path out of a drive (quit, pause, exception,
Ctrl-C, SIGTERM, interpreter exit) ends in KeyScheduler.release_all.
"""
import atexit
import heapq
import importlib
import math
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Protocol

from data.errors import UserError
from data.labels import KEYS

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


@dataclass(frozen=True)
class ReleaseTiming:
    """How the release thread waits for a key's release time (see KeyScheduler.serve)."""

    coarse_late_s: float = 0.016 if sys.platform == "win32" else 0.002  # how late Condition.wait may wake
    step_s: float = 0.001  # longest precise sleep: a plan applied meanwhile is seen within this


class KeyScheduler:
    """Applies hold plans to a sink; ONE background thread releases keys when their time is up.

    Clock times are `clock()` seconds (time.perf_counter by default). With start_thread=False no
    thread runs and the owner calls release_due(now) or serve() itself (tests, simulated time).
    `sleep` is the precise sleep the last stretch before a release uses (drive.gta5.win32.precise_sleep gives
    Windows' high-resolution one) and `coarse_wait(condition, timeout)` the interruptible wait before it;
    `on_thread_start` runs first in the release thread.
    """

    def __init__(self, sink: KeySink, clock: Callable[[], float] = time.perf_counter, start_thread: bool = True,
                 sleep: Callable[[float], None] = time.sleep, timing: "ReleaseTiming | None" = None,
                 coarse_wait: Callable[[threading.Condition, float | None], object] = threading.Condition.wait,
                 on_thread_start: Callable[[], None] = lambda: None):
        self.sink = sink
        self.clock = clock
        self.sleep, self.coarse_wait, self.on_thread_start = sleep, coarse_wait, on_thread_start
        self.timing = timing or ReleaseTiming()
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
            self._thread = threading.Thread(target=self._thread_main, name="key-releases", daemon=True)
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

    def _next_due(self) -> float | None:
        live = [due for due, token, key in self._heap if self._token[key] == token]
        return min(live) if live else None

    def _thread_main(self) -> None:
        self.on_thread_start()  # e.g. a higher thread priority on Windows, so a busy game does not delay releases
        self.serve()

    def serve(self) -> None:
        """The release thread's body, until close(). Condition.wait wakes up to timing.coarse_late_s late (a
        15.6 ms timer tick on Windows), so it only waits until that long before the next release; the rest
        is slept in precise steps of at most timing.step_s, so a new plan is seen within a step."""
        while True:
            with self._cond:
                if self._closed:
                    return
                try:
                    self.release_due()
                except BaseException as e:  # surfaced by the next apply()
                    self.thread_error = e
                    try:
                        self.release_all()
                    except BaseException:
                        pass
                    return
                due, now = self._next_due(), self.clock()
                if due is None or due - now > self.timing.coarse_late_s:
                    self.coarse_wait(self._cond, None if due is None else due - now - self.timing.coarse_late_s)
                    continue
            self.sleep(max(0.0, min(due - now, self.timing.step_s)))


@contextmanager
def fine_thread_switching(interval_s: float = 0.001):
    """Inside, a thread waiting for the GIL gets it within ~interval_s instead of Python's default 5 ms,
    so the release thread is not held up by the loop's Python code (restored on the way out)."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, interval_s))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


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
