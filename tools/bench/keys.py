"""Key release timing: how far from its planned time the KeyScheduler lets go of a key, on this machine.

Plans like the live loop's: w held, a or d for a share of a decision interval drawn from 25–125 ms (the
seed's 8 decisions/s and faster), a new plan every interval. The scheduler runs as `python -m drive
--game gta5` runs it (its thread, the platform's precise sleep: Windows' high-resolution waitable timer);
release times are the virtual keyboard's clock readings when the release call arrives. Measured twice:
with the main thread asleep between plans, and busy running Python code (the release thread then waits
for the GIL; drive sets Python's switch interval to 1 ms for that).
"""
import math
import sys
import time
from dataclasses import dataclass

import numpy as np

from drive.gta5.win32 import precise_sleep, raise_thread_priority
from drive.keys import KeyScheduler, RecordingSink, fine_thread_switching

GOAL_MS = 2.0


@dataclass
class KeyReleaseBench:
    decisions: int = 200  # plans applied; each releases one steer key
    interval_s: tuple[float, float] = (0.025, 0.125)
    seed: int = 0


def _run(s: KeyReleaseBench, busy: bool) -> np.ndarray:
    """Release errors in ms; busy: the main thread runs Python code between plans, as the loop's glue does."""
    rng = np.random.default_rng(s.seed)
    sink = RecordingSink()
    planned: dict[str, list[float]] = {"a": [], "d": []}
    with KeyScheduler(sink, clock=time.perf_counter, sleep=precise_sleep(), on_thread_start=raise_thread_priority) \
            as scheduler, fine_thread_switching():
        for i in range(s.decisions):
            interval, steer = rng.uniform(*s.interval_s), "ad"[i % 2]
            hold = rng.uniform(0.1, 0.9) * interval
            now = time.perf_counter()
            scheduler.apply({"w": math.inf, steer: hold}, now=now)
            planned[steer].append(now + hold)
            while busy and time.perf_counter() < now + interval:
                sum(range(100))
            time.sleep(max(0.0, now + interval - time.perf_counter()))  # the model thinking in C++ code
    errors = []
    for key, dues in planned.items():
        ups = [t for t, k, kind in sink.events if k == key and kind == "up"]
        errors += [(up - due) * 1000 for up, due in zip(ups, dues)]
    return np.array(errors)


def release_timing(s: KeyReleaseBench, log=print) -> dict:
    timer = ("high-resolution waitable timer" if sys.platform == "win32" else "time.sleep") + f" ({sys.platform})"
    result = {"releases": s.decisions, "goal_ms": GOAL_MS, "timer": timer,
              "interval_ms": [s.interval_s[0] * 1000, s.interval_s[1] * 1000]}
    for name, busy in (("idle", False), ("busy", True)):
        errors_ms = _run(s, busy)
        result[name] = {"releases": len(errors_ms), "median_ms": float(np.median(errors_ms)),
                        "p99_ms": float(np.percentile(errors_ms, 99)), "max_ms": float(errors_ms.max()),
                        "early_ms": float(max(0.0, -errors_ms.min()))}
        r = result[name]
        log(f"  key release error, main thread {name}, {r['releases']} releases: median {r['median_ms']:.3f} ms, "
            f"p99 {r['p99_ms']:.3f} ms, max {r['max_ms']:.3f} ms ({timer})")
    return result
