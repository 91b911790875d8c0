"""Take over and teach: the player grabs control while the agent drives; corrections are recorded."""
import ctypes
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cache.sampler import SamplerSettings, SequenceSampler
from data.episode import Episode
from data.errors import UserError
from data.split import Segment
from drive.controller import ControllerSettings
from drive.gta5.player_keys import (LLKHF_INJECTED, WM_KEYDOWN, WM_KEYUP, KbdLLHookStruct, PlayerKeyHook)
from drive.gta5.scancodes import SCAN_CODES
from drive.loop import LoopSettings, drive
from drive.takeover import KeyEvent, Takeover, TakeoverSettings, default_context_s
from tests.conftest import synthetic_cache
from tests.test_loop import FakeClock, all_released, make_parts, read_jsonl

REPO_ROOT = Path(__file__).resolve().parents[1]
SHAPE = (28, 28, 3)
GRAB_S = 0.125  # each grab takes this much fake time: 8 frames a second


class ScriptedPlayer:
    """Key events at given fake times, handed out once the clock reaches them."""

    def __init__(self, clock, events):
        self.clock, self.pending = clock, sorted(events, key=lambda e: e.t)

    def __call__(self):
        due = [e for e in self.pending if e.t <= self.clock.t + 1e-9]
        self.pending = self.pending[len(due):]
        return due


def drive_with_takeover(tmp_path, events, n=40, handback_s=0.5, context_s=0.5):
    clock = FakeClock()
    parts, sink = make_parts(n, clock=clock)
    settings = TakeoverSettings(tmp_path / "corrections", context_s=context_s, handback_s=handback_s, fps=8.0)
    parts.takeover = Takeover(settings, ScriptedPlayer(clock, events), parts.scheduler.release_all, SHAPE,
                              "test", context_s, log=lambda s: None)
    journal = []  # ("record", frame number, keys down in the sink) for every player frame recorded
    record = parts.takeover.record

    def recording(frame, t):
        kept = record(frame, t)
        if kept:
            journal.append(("record", int(frame[0, 0, 0]), set(sink.down)))
        return kept

    parts.takeover.record = recording
    loop = LoopSettings(seq_len=3, stride_s=0.25, telemetry_path=tmp_path / "t.jsonl")
    summary = drive(parts, ControllerSettings(), loop, log=lambda s: None)
    return parts, sink, summary, journal


def test_a_takeover_releases_every_agent_key_before_the_players_first_frame(tmp_path):
    # the player presses d at t = 1.0 s (after 8 agent frames) and lets go at 2.0 s
    events = [KeyEvent("d", True, 1.0), KeyEvent("d", False, 2.0)]
    parts, sink, summary, journal = drive_with_takeover(tmp_path, events)
    assert journal, "no player frame was recorded"
    assert journal[0][2] == set()  # the agent's w and a were already released
    down_before = [e for e in sink.events if e[0] <= 1.0 + 1e-9 and e[2] == "down"]
    assert {k for _, k, _ in down_before} == {"w", "a"}  # the agent held keys when the player took over
    ups = [t for t, k, kind in sink.events if kind == "up" and k in ("w", "a")]
    assert min(ups) == pytest.approx(1.0)  # at once, on the takeover
    player_span = [t for t, _, kind in sink.events if kind == "down" and 1.0 < t < 2.0]
    assert player_span == []  # the agent pressed nothing while the player drove
    assert all_released(sink)


def test_the_correction_holds_the_lead_up_as_context_never_as_a_label(tmp_path):
    shift = 0.25
    context = default_context_s(3, 0.25, shift)  # one sequence plus the label shift: 1.0 s
    events = [KeyEvent("d", True, 2.0), KeyEvent("d", False, 3.0)]
    parts, sink, summary, journal = drive_with_takeover(tmp_path, events, context_s=context)
    path, = parts.takeover.episodes
    ep = Episode(path)
    assert ep.kind == "correction" and ep.complete
    # the agent acted on frames 0..15 (captured at 0.125 .. 2.0 s); those of the last second are the lead-up
    lead_up = list(range(7, 16))
    assert ep.context_frames == len(lead_up)
    frames = ep.frames[:]
    assert [int(f[0, 0, 0]) for f in frames[:len(lead_up)]] == lead_up
    np.testing.assert_array_equal(ep.keys[:len(lead_up)], 0)
    player = [int(f[0, 0, 0]) for f in frames[len(lead_up):]]
    assert player == [r[1] for r in journal] and player[0] == 16  # the very next frame is the player's
    keys = ep.keys[len(lead_up):]
    # frames captured at 2.125 .. 2.875 s; d went up at 3.0 s, when frame 23 was captured
    assert keys[:7, 3].tolist() == [1] * 7 and keys[7:, 3].sum() == 0 and keys[:, :3].sum() == 0  # d, while held
    np.testing.assert_allclose(np.diff(ep.t[:]), GRAB_S)  # one frame rate throughout

    cache = synthetic_cache(tmp_path, [path], variants=("clean",), every=1)
    settings = SamplerSettings(seq_len=3, stride_s=0.25, label_shift_s=shift)
    table = SequenceSampler(cache, [Segment(path, 0, len(ep))], settings).table
    assert len(table) and table[:, 2].min() == len(lead_up)  # the first label is the player's first frame...
    first = table[table[:, 2] == len(lead_up)]
    sampler = SequenceSampler(cache, [Segment(path, 0, len(ep))], settings)
    assert sampler.input_rows(first).max() < len(lead_up)  # ... predicted from the agent's lead-up alone


def test_hand_back_resumes_the_agent_with_a_fresh_history(tmp_path):
    events = [KeyEvent("d", True, 1.0), KeyEvent("d", False, 1.5)]
    parts, sink, summary, journal = drive_with_takeover(tmp_path, events, n=30, handback_s=0.5)
    drivers = [r for r in read_jsonl(tmp_path / "t.jsonl") if r["event"] == "driver"]
    assert [(r["driver"], r["t"]) for r in drivers] == [("player", pytest.approx(1.0)), ("agent", pytest.approx(2.0))]
    seen = parts.head_fn.seen
    player_frames = {r[1] for r in journal}
    assert player_frames == set(range(8, 16))  # frames of 1.125 .. 2.0 s: while the player drove
    after = seen[8]  # the first decision after the hand-back
    assert after == [16, 16, 16]  # nothing from before the takeover is stitched onto it
    assert summary.decisions == 30 - len(player_frames)
    downs_after = [t for t, _, kind in sink.events if kind == "down" and t > 2.0]
    assert downs_after  # the agent presses keys again
    assert all_released(sink)


def test_injected_key_events_never_take_over(tmp_path):
    # the agent's own presses come back through the hook marked as injected, takeover key included
    events = [KeyEvent(k, down, t, injected=True) for t in (0.5, 1.0, 1.5)
              for k, down in (("w", True), ("a", True), ("y", True), ("w", False), ("a", False), ("y", False))]
    parts, sink, summary, journal = drive_with_takeover(tmp_path, events, n=20)
    assert parts.takeover.episodes == [] and journal == []
    assert summary.decisions == 20
    assert not (tmp_path / "corrections").exists()


def test_releasing_the_takeover_key_hands_back_at_once_and_held_keys_do_not_retake(tmp_path):
    events = [KeyEvent("y", True, 1.0), KeyEvent("w", True, 1.25), KeyEvent("y", False, 1.5),
              KeyEvent("w", True, 1.75),  # key-repeat of a key still held: no new press
              KeyEvent("w", False, 2.5), KeyEvent("a", True, 3.0), KeyEvent("a", False, 3.25)]
    parts, sink, summary, journal = drive_with_takeover(tmp_path, events, n=40, handback_s=5.0)
    drivers = [(r["driver"], r["t"]) for r in read_jsonl(tmp_path / "t.jsonl") if r["event"] == "driver"]
    assert drivers == [("player", pytest.approx(1.0)), ("agent", pytest.approx(1.5)),
                       ("player", pytest.approx(3.0))]
    assert len(parts.takeover.episodes) == 2


def test_settings_refusals(tmp_path):
    (tmp_path / "file").write_text("x")
    for kw, flag in (({"handback_s": 0}, "--handback"), ({"context_s": -1}, "--context"),
                     ({"out_dir": tmp_path / "file"}, "--record-corrections")):
        with pytest.raises(UserError, match=flag):
            TakeoverSettings(**{"out_dir": tmp_path / "c", **kw}).check()


KILLED = textwrap.dedent("""
    import sys, time
    import numpy as np
    from pathlib import Path
    from drive.takeover import KeyEvent, Takeover, TakeoverSettings
    out = Path(sys.argv[1])
    pending = []
    takeover = Takeover(TakeoverSettings(out, context_s=0.5, fps=10.0, flush_seconds=3600.0),
                        lambda: [pending.pop()] if pending else [], lambda: None, (8, 8, 3), "test", 0.5,
                        log=lambda s: None)
    for i in range(40):
        t = 0.1 * i
        frame = np.full((8, 8, 3), i, np.uint8)
        if i == 8:
            pending.append(KeyEvent("a", True, t))
        if takeover.poll(t) == "agent":
            takeover.observe(frame, t)
        else:
            takeover.record(frame, t)
        if i == 25:
            print(takeover._writer.n_frames, flush=True)
            time.sleep(60)
""")


def test_a_sigkill_during_a_correction_leaves_a_readable_episode_up_to_its_last_flush(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path / "c")], stdout=subprocess.PIPE, text=True,
                            env=env, cwd=REPO_ROOT)
    try:
        flushed = int(proc.stdout.readline())
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    path, = (tmp_path / "c").iterdir()
    ep = Episode(path)
    # the lead-up (frames 2..7, within 0.5 s of the last one) was flushed at the takeover, then every 10
    # frames (the writer's chunk at 10 fps): of the player's frames 8..25, 8..17 were flushed
    assert not ep.complete and ep.kind == "correction" and ep.context_frames == 6
    assert flushed == len(ep) == 6 + 10
    assert [int(f[0, 0, 0]) for f in ep.frames[:]] == list(range(2, 18))
    np.testing.assert_array_equal(ep.keys[6:, 1], 1)


class FakeHookApi:
    """Win32 stand-in: records the calls; pump() blocks until post_quit."""

    def __init__(self, install_result=1):
        import queue
        self.calls, self.install_result, self.q = [], install_result, queue.Queue()
        self.proc = None

    def install(self, proc):
        self.proc = proc
        self.calls.append("install")
        return self.install_result

    def call_next(self, n_code, w_param, l_param):
        self.calls.append(("next", n_code, w_param))
        return 7

    def make_queue(self):
        self.calls.append("make_queue")

    def pump(self):
        return self.q.get()

    def thread_id(self):
        return 42

    def post_quit(self, thread_id):
        self.calls.append(("post_quit", thread_id))
        self.q.put(0)
        return True

    def uninstall(self, hook):
        self.calls.append(("uninstall", hook))
        return True


def hook_struct(scan, flags=0):
    s = KbdLLHookStruct(vkCode=0x41, scanCode=scan, flags=flags, time=0, dwExtraInfo=0)
    return s, ctypes.addressof(s)


def test_the_keyboard_hook_tells_the_players_keys_from_injected_ones():
    api, clock = FakeHookApi(), FakeClock()
    hook = PlayerKeyHook(api, "y", clock=clock).start()
    assert api.calls[:2] == ["make_queue", "install"]  # the queue exists before anyone may post WM_QUIT
    keep = []
    for scan, flags, msg in ((SCAN_CODES["a"], 0, WM_KEYDOWN), (SCAN_CODES["a"], LLKHF_INJECTED, WM_KEYDOWN),
                             (0x15, 0, WM_KEYDOWN), (0x15, 0, WM_KEYUP), (0x2E, 0, WM_KEYDOWN)):
        s, ptr = hook_struct(scan, flags)
        keep.append(s)
        clock.t += 0.5
        assert api.proc(0, msg, ptr) == 7  # always passed on, CallNextHookEx's value returned
    assert api.proc(-1, WM_KEYDOWN, hook_struct(SCAN_CODES["w"])[1]) == 7  # nCode < 0: not looked at
    assert hook() == [KeyEvent("a", True, 0.5, False), KeyEvent("a", True, 1.0, True),
                      KeyEvent("y", True, 1.5, False), KeyEvent("y", False, 2.0, False)]  # c (0x2E): ignored
    assert hook() == []
    hook.close()
    assert ("post_quit", 42) in api.calls and api.calls[-1] == ("uninstall", 1)
    with pytest.raises(UserError, match="--takeover-key"):
        PlayerKeyHook(api, "nope")
    with pytest.raises(UserError, match="keyboard hook"):
        PlayerKeyHook(FakeHookApi(install_result=0), "y").start()


def test_struct_layout_matches_kbdllhookstruct():
    assert [f[0] for f in KbdLLHookStruct._fields_] == ["vkCode", "scanCode", "flags", "time", "dwExtraInfo"]
    assert KbdLLHookStruct.dwExtraInfo.offset == 16  # four DWORDs, then a pointer-sized ULONG_PTR
    assert ctypes.sizeof(KbdLLHookStruct) == 16 + ctypes.sizeof(ctypes.c_void_p)


def test_the_expert_takes_over_behind_the_gate_on_the_embedded_game(tmp_path, monkeypatch):
    from drive.carracing import corrections
    from drive.carracing.corrections import GATE_KEY, GateSettings, TakeoverRecordSettings, record_takeover
    from tests.test_agent import make_checkpoint, silent

    ckpt, _ = make_checkpoint(tmp_path, label_shift_s=0.1)
    seen = []  # every event the takeover read, in order
    events = corrections.ExpertPlayer.events
    monkeypatch.setattr(corrections.ExpertPlayer, "events", lambda self: seen.extend(out := events(self)) or out)
    settings = TakeoverRecordSettings(gate=GateSettings(max_offset=1.0, back_offset=0.5))
    paths = record_takeover(ckpt, tmp_path / "rec", minutes=0.05, seed=7, settings=settings, log=silent)
    assert paths and all(p.name.startswith("takeover-seed") for p in paths)
    eps = [Episode(p) for p in paths]
    assert all(ep.kind == "correction" and ep.complete and ep.attrs["source"] == "takeover" for ep in eps)
    assert sum(len(ep) - ep.context_frames for ep in eps) == round(0.05 * 60 * 10)  # the expert-labelled budget
    assert all(ep.keys[:ep.context_frames].sum() == 0 for ep in eps)
    assert sum(ep.keys[ep.context_frames:, 0].sum() for ep in eps) > 0  # the expert's gas
    np.testing.assert_allclose(np.diff(eps[0].t[:]), 0.1, atol=1e-9)  # lead-up and the expert's frames alike
    # the agent's presses reached the takeover, marked injected; only the gate's key press took over
    assert any(e.injected for e in seen)
    gate_downs = [e for e in seen if e.key == GATE_KEY and e.down]
    assert len(gate_downs) == len(paths) and not any(e.injected for e in gate_downs)
    with pytest.raises(UserError, match="takeover-seed7-"):
        record_takeover(ckpt, tmp_path / "rec", minutes=0.05, seed=7, settings=settings, log=silent)


def test_drive_cli_refuses_takeover_mistakes_before_loading_anything(tmp_path):
    from drive.__main__ import main
    missing = tmp_path / "missing.pt"  # never read: every refusal comes first
    (tmp_path / "file").write_text("x")
    cases = [(["--record-corrections", str(tmp_path / "c")], "--record-corrections works with --game gta5 only"),
             (["--game", "gta5", "--record-corrections", str(tmp_path / "c"), "--handback", "0"], "--handback 0"),
             (["--game", "gta5", "--record-corrections", str(tmp_path / "file")], "is a file"),
             (["--game", "gta5", "--record-corrections", str(tmp_path / "c"), "--context", "-1"], "--context -1")]
    for extra, message in cases:
        with pytest.raises(UserError, match=message):
            main(["--ckpt", str(missing)] + extra)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_record_cli_takeover_refuses_dagger_flags(tmp_path):
    from tools.record import main as record
    with pytest.raises(UserError, match="--takeover records the expert's corrections only"):
        record(["--game", "carracing", "--expert", "--takeover", str(tmp_path / "c.pt"), "--dagger", str(tmp_path / "c.pt"),
                "--minutes", "1", "--out", str(tmp_path / "rec")])
    assert not (tmp_path / "rec").exists()


def test_the_comparison_verdict_follows_the_projects_rule():
    from drive.carracing.verdict import verdict
    # gap 30; standard error sqrt(100/3 + 100/3) = 8.2: 3.7 standard errors
    assert verdict([110, 120, 130], [80, 90, 100]).endswith("+3.7 standard errors: **confirmed**")
    assert verdict([110, 120, 130], [100, 110, 120]).endswith("+1.2 standard errors: inconclusive")
    assert verdict([80, 90, 100], [110, 120, 130]).endswith("-3.7 standard errors: **refuted**")
    assert "no verdict" in verdict([110], [100])


def test_the_comparison_keeps_held_out_scores_for_a_resumed_run(tmp_path, monkeypatch):
    import drive.carracing.compare_corrections as cc
    from drive.carracing.demo import DemoSettings

    drives = []

    def fake_evaluate(ckpt, tracks, **kw):
        drives.append(ckpt)
        return [SimpleNamespace(reward=10.0 * t + len(drives), tile_share=0.5) for t in tracks]

    monkeypatch.setattr(cc, "evaluate_agent", fake_evaluate)
    s = cc.CompareSettings(demo=DemoSettings(out=tmp_path))
    ckpts = [tmp_path / "none" / f"final-seed{k}" / "best.pt" for k in (0, 1)]
    first = cc.held_out_scores(s, "none", ckpts, [1, 2], None, log=lambda *a: None)
    assert first == {"rewards": [16.0, 17.0], "tiles": [0.5, 0.5]} and len(drives) == 2
    assert cc.held_out_scores(s, "none", ckpts, [1, 2], None, log=lambda *a: None) == first
    assert len(drives) == 2  # kept: nothing driven again
    cc.held_out_scores(s, "none", ckpts, [1, 2, 3], None, log=lambda *a: None)
    assert len(drives) == 4  # other tracks: driven again
