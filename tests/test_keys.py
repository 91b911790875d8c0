import ctypes
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import types
from pathlib import Path

import pytest

import drive.keys as keys
from data.errors import UserError
from drive.keys import KeyScheduler, RecordingSink, release_keys_on_exit

REPO = Path(__file__).resolve().parents[1]


def manual(sink=None):
    """A scheduler without its thread: releases happen when the test calls release_due(now)."""
    sink = sink or RecordingSink(clock=lambda: 0.0)
    return KeyScheduler(sink, clock=lambda: 0.0, start_thread=False), sink


def kinds(sink):
    return [(key, kind) for _, key, kind in sink.events]


def test_apply_presses_holds_and_schedules_releases():
    sched, sink = manual()
    sched.apply({"w": math.inf, "a": 0.05, "s": 0, "d": 0}, now=10.0)
    assert sched.held_keys() == {"w", "a"}
    assert sched.pending_releases() == {"a": pytest.approx(10.05)}
    assert sched.release_due(10.04) == []
    assert sched.release_due(10.05) == ["a"]
    assert sched.held_keys() == {"w"}
    assert kinds(sink) == [("w", "down"), ("a", "down"), ("a", "up")]


def test_releases_come_before_presses_so_opposite_keys_never_overlap():
    sched, sink = manual()
    sched.apply({"a": math.inf, "w": math.inf}, now=0.0)
    sched.apply({"d": 0.1, "s": math.inf}, now=0.1)
    assert kinds(sink)[2:] == [("w", "up"), ("a", "up"), ("s", "down"), ("d", "down")]


def test_a_new_plan_replaces_a_pending_release():
    sched, sink = manual()
    sched.apply({"a": 0.1}, now=0.0)
    sched.apply({"a": 0.3}, now=0.05)  # still down: no second press, release moves to 0.35
    assert sched.release_due(0.2) == []
    assert sched.release_due(0.35) == ["a"]
    sched.apply({"d": 0.1}, now=1.0)
    sched.apply({"d": math.inf}, now=1.05)  # held until changed: the old release must not fire
    assert sched.release_due(5.0) == []
    assert kinds(sink) == [("a", "down"), ("a", "up"), ("d", "down")]


def test_release_all_and_held_seconds():
    t = [0.0]
    sink = RecordingSink()
    sched = KeyScheduler(sink, clock=lambda: t[0], start_thread=False)
    sched.apply({"w": math.inf, "d": 0.5})
    t[0] = 0.25
    sched.release_all()
    assert sink.down == set() and sched.pending_releases() == {}
    held = sched.held_seconds()
    assert held["w"] == pytest.approx(0.25) and held["d"] == pytest.approx(0.25) and held["a"] == 0
    assert sched.release_due(10.0) == []  # the dropped release does not fire later


def test_unknown_key_in_plan_raises():
    sched, _ = manual()
    with pytest.raises(ValueError, match="unknown keys"):
        sched.apply({"q": 1.0})


class FailingSink(RecordingSink):
    def release(self, key):
        super().release(key)
        if key == "w":
            raise OSError("device gone")


def test_release_all_releases_the_others_when_one_release_fails():
    sched, sink = manual(FailingSink())
    sched.apply({"w": math.inf, "a": math.inf, "s": 0, "d": 0}, now=0.0)
    with pytest.raises(OSError):
        sched.release_all()
    assert sink.down == set()


def test_background_thread_releases_timed_keys():
    sink = RecordingSink()
    released = threading.Event()
    sink.on_event = lambda t, key, kind: released.set() if (key, kind) == ("d", "up") else None
    with KeyScheduler(sink) as sched:
        sched.apply({"d": 0.02, "w": math.inf})
        assert released.wait(5), "timed release never happened"
        assert sched.held_keys() == {"w"}
        (t_down, *_), (t_up, *_) = [e for e in sink.events if e[1] == "d"]
        assert t_up - t_down >= 0.02  # never early
    assert sink.down == set()  # close() releases the rest
    assert not sched._thread.is_alive()


def test_one_thread_for_many_timed_presses():
    before = threading.active_count()
    with KeyScheduler(RecordingSink()) as sched:
        for i in range(50):
            sched.apply({"a": 0.5, "d": 0}, now=sched.clock())
            sched.apply({"d": 0.5, "a": 0}, now=sched.clock())
        assert threading.active_count() == before + 1


def test_release_keys_on_exit_releases_on_exception_and_restores_handler():
    sched, sink = manual()
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError):
        with release_keys_on_exit(sched):
            sched.apply({"w": math.inf, "a": math.inf}, now=0.0)
            assert signal.getsignal(signal.SIGTERM) is not previous
            raise RuntimeError("head failed")
    assert sink.down == set()
    assert signal.getsignal(signal.SIGTERM) is previous


def test_sigterm_inside_becomes_terminated_and_releases():
    sched, sink = manual()
    with pytest.raises(keys.Terminated) as info:
        with release_keys_on_exit(sched):
            sched.apply({"s": math.inf}, now=0.0)
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000_000):  # the handler runs between bytecodes
                pass
    assert info.value.code == 128 + signal.SIGTERM
    assert sink.down == set()


def test_interpreter_exit_releases_held_keys(tmp_path):
    log = tmp_path / "events.txt"
    code = textwrap.dedent(f"""
        import math
        from drive.keys import KeyScheduler, RecordingSink
        log = open({str(log)!r}, "w", buffering=1)
        sink = RecordingSink(on_event=lambda t, key, kind: log.write(f"{{key}} {{kind}}\\n"))
        sched = KeyScheduler(sink)
        sched.apply({{"w": math.inf, "d": math.inf}})
        # no close(): the interpreter simply ends
    """)
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
    lines = log.read_text().split()
    events = list(zip(lines[::2], lines[1::2]))
    assert events[:2] == [("w", "down"), ("d", "down")]
    assert sorted(events[2:]) == [("d", "up"), ("w", "up")]


def test_scan_code_input_records():
    assert ctypes.sizeof(keys._Input) == (40 if ctypes.sizeof(ctypes.c_void_p) == 8 else 28)
    down, up = keys.scan_code_input("a", up=False), keys.scan_code_input("a", up=True)
    assert down.type == keys.INPUT_KEYBOARD and down.u.ki.wScan == 0x1E and down.u.ki.wVk == 0
    assert down.u.ki.dwFlags == keys.KEYEVENTF_SCANCODE
    assert up.u.ki.dwFlags == keys.KEYEVENTF_SCANCODE | keys.KEYEVENTF_KEYUP
    assert [keys.scan_code_input(k, False).u.ki.wScan for k in "wasd"] == [0x11, 0x1E, 0x1F, 0x20]


@pytest.mark.skipif(sys.platform == "win32", reason="checks the refusal outside Windows")
def test_sendinput_sink_refused_outside_windows():
    with pytest.raises(UserError, match="--keys sendinput"):
        keys.WindowsSendInputSink()


def test_keyboard_package_sink_imports_lazily(monkeypatch):
    calls = []
    fake = types.SimpleNamespace(press=lambda k: calls.append(("down", k)), release=lambda k: calls.append(("up", k)))
    monkeypatch.setitem(sys.modules, "keyboard", fake)
    sink = keys.KeyboardPackageSink()
    sink.press("w")
    sink.release("w")
    assert calls == [("down", "w"), ("up", "w")]
    monkeypatch.setitem(sys.modules, "keyboard", None)  # makes `import keyboard` fail
    with pytest.raises(UserError, match="pip install keyboard"):
        keys.KeyboardPackageSink()
