import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from data.errors import UserError
from drive.controller import ControllerSettings
from drive.keys import KeyScheduler, RecordingSink
from drive.loop import DriveParts, HotkeyQueue, LoopSettings, drive
from tests.conftest import synthetic_frames

REPO = Path(__file__).resolve().parents[1]
LOGITS = [3.0, 1.0, -3.0, -1.0]  # p(w) 0.95, p(a) 0.73, p(s) 0.05, p(d) 0.27


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class FrameSource:
    """n synthetic frames (row 0 of red holds the frame number); each grab takes `grab_s` of fake time."""

    def __init__(self, n, clock=None, grab_s=0.125, on_grab=None):
        self.frames = synthetic_frames(n, shape=(28, 28, 3))
        self.clock, self.grab_s, self.on_grab = clock, grab_s, on_grab
        self.i = 0

    def __call__(self):
        if self.i == len(self.frames):
            return None
        if self.on_grab is not None:
            self.on_grab(self.i)
        if self.clock is not None:
            self.clock.t += self.grab_s
        self.i += 1
        return self.frames[self.i - 1]


class CountingBackbone(torch.nn.Module):
    """Per-frame features: the frame number and the mean pixel. Counts calls and frames."""

    def __init__(self, on_call=None):
        super().__init__()
        self.calls = self.frames = 0
        self.on_call = on_call

    def forward(self, x):
        self.calls += 1
        self.frames += len(x)
        if self.on_call is not None:
            self.on_call(self.calls)
        return torch.stack([x[:, 0, 0, 0], x.mean(dim=(1, 2, 3))], dim=1)


class RecordingHead(torch.nn.Module):
    """Fixed logits; remembers the frame numbers of each sequence; can fail at a given call."""

    def __init__(self, fail_at=None):
        super().__init__()
        self.seen = []
        self.fail_at = fail_at

    def forward(self, seq):
        assert seq.shape[0] == 1 and seq.shape[2] == 2
        self.seen.append([int(v) for v in seq[0, :, 0]])
        if len(self.seen) == self.fail_at:
            raise RuntimeError("head failed")
        return torch.tensor([LOGITS])


def to_tensor(frame):
    return torch.from_numpy(frame).permute(2, 0, 1).float()


def make_parts(n=8, clock=None, scheduler=None, hotkeys=None, backbone=None, head=None, on_grab=None):
    clock = clock or FakeClock()
    sink = RecordingSink(clock=clock)
    scheduler = scheduler or KeyScheduler(sink, clock=clock, start_thread=False)
    parts = DriveParts(grab=FrameSource(n, clock if isinstance(clock, FakeClock) else None, on_grab=on_grab),
                       preprocess_fn=to_tensor, features_fn=backbone or CountingBackbone(),
                       head_fn=head or RecordingHead(), scheduler=scheduler)
    if hotkeys is not None:
        parts.hotkeys = hotkeys
    return parts, scheduler.sink


def read_jsonl(path):
    def strict(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return [json.loads(line, parse_constant=strict) for line in Path(path).read_text().splitlines()]


def all_released(sink):
    """Every key that went down went up again afterwards."""
    last = {}
    for _, key, kind in sink.events:
        last[key] = kind
    return sink.down == set() and all(kind == "up" for kind in last.values()) and last


# frames every 0.125 s, stride 0.3 s: by hand, slot ages 0.625, 0.25, 0 once there is history
EXPECTED_SEQUENCES = [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 1, 3], [0, 2, 4], [0, 3, 5], [1, 4, 6], [2, 5, 7]]


@pytest.mark.parametrize("mode", ["ring", "recompute"])
def test_sequences_picked_by_timestamp_and_backbone_calls_counted(mode, tmp_path):
    parts, _ = make_parts(8)
    settings = LoopSettings(seq_len=3, stride_s=0.3, mode=mode, telemetry_path=tmp_path / "t.jsonl")
    summary = drive(parts, ControllerSettings(), settings, log=lambda s: None)
    assert summary.decisions == 8 and summary.stopped_by == "source_end"
    assert parts.head_fn.seen == EXPECTED_SEQUENCES
    assert parts.features_fn.calls == 8  # one backbone call per decision in both modes...
    assert parts.features_fn.frames == (8 if mode == "ring" else 24)  # ...on 1 frame, or the whole sequence
    decisions = [r for r in read_jsonl(tmp_path / "t.jsonl") if r["event"] == "decision"]
    assert decisions[-1]["seq_age_s"] == [0.625, 0.25, 0.0]


def test_controller_plan_telemetry_and_summary(tmp_path):
    parts, sink = make_parts(8)
    settings = LoopSettings(first_interval_s=0.1, recording_fps=80, telemetry_path=tmp_path / "t.jsonl")
    summary = drive(parts, ControllerSettings(max_steer=1.0), settings, log=lambda s: None)
    records = read_jsonl(tmp_path / "t.jsonl")
    decisions = [r for r in records if r["event"] == "decision"]
    assert len(decisions) == 8 and records[-1]["event"] == "summary"
    delta = torch.sigmoid(torch.tensor(1.0)).item() - torch.sigmoid(torch.tensor(-1.0)).item()
    assert decisions[0]["interval_s"] == 0.1  # no previous decision
    assert decisions[0]["hold_s"] == {"w": None, "a": pytest.approx(delta * 0.1, abs=1e-4), "s": 0, "d": 0}
    assert decisions[3]["interval_s"] == 0.125  # one grab of fake time since the last decision
    assert decisions[3]["hold_s"]["a"] == pytest.approx(delta * 0.125, abs=1e-4)
    assert decisions[3]["probs"] == pytest.approx([0.9526, 0.7311, 0.0474, 0.2689], abs=1e-4)
    assert decisions[3]["ms"]["capture"] == 125.0 and decisions[3]["ms"]["total"] == 125.0
    # every grab takes 0.125 s: 8 decisions/s, and at 80 fps the label shift is the seed's 10 frames
    assert summary.decisions_per_s == pytest.approx(8.0)
    assert summary.latency_ms["total"] == {"p50": pytest.approx(125.0), "p95": pytest.approx(125.0)}
    assert summary.label_shift_frames == 10
    # w is held from the first decision (t = 0.125) to the end (t = 1.0) of a 1.0 s drive; s and d never
    assert summary.key_share["w"] == pytest.approx(7 / 8)
    assert summary.key_share["s"] == 0 and summary.key_share["d"] == 0
    assert [e[1:] for e in sink.events if e[1] == "w"] == [("w", "down"), ("w", "up")]
    assert all_released(sink)


def test_quit_hotkey_stops_and_releases_everything():
    hotkeys = HotkeyQueue()
    parts, sink = make_parts(50, hotkeys=hotkeys, on_grab=lambda i: hotkeys.put("T") if i == 4 else None)
    summary = drive(parts, ControllerSettings(), LoopSettings(), log=lambda s: None)
    assert summary.stopped_by == "quit" and summary.decisions == 5
    assert {key for _, key, kind in sink.events if kind == "down"} == {"w", "a"}
    assert all_released(sink)


def test_pause_releases_keys_and_resume_starts_a_fresh_history(tmp_path):
    polls, down_while_paused = [], []
    parts, sink = make_parts(6)

    def hotkeys():
        polls.append(1)
        if len(polls) in (4, 5):  # polls while paused
            down_while_paused.append(set(sink.down))
        return ["n"] if len(polls) in (3, 6) else []

    parts.hotkeys = hotkeys
    settings = LoopSettings(pause_poll_s=0.001, first_interval_s=0.1, telemetry_path=tmp_path / "t.jsonl")
    summary = drive(parts, ControllerSettings(), settings, log=lambda s: None)
    assert summary.decisions == 6
    assert down_while_paused == [set(), set()]
    events = [r["event"] for r in read_jsonl(tmp_path / "t.jsonl")]
    assert events[:4] == ["decision", "decision", "pause", "resume"]
    assert parts.head_fn.seen[2] == [2, 2, 2]  # history before the pause is not reused
    first_after = [r for r in read_jsonl(tmp_path / "t.jsonl") if r["event"] == "decision"][2]
    assert first_after["interval_s"] == 0.1
    assert [k for _, k, kind in sink.events if kind == "up"][:2] == ["w", "a"]  # released by the pause
    assert all_released(sink)


def test_exception_in_head_releases_keys_and_is_logged(tmp_path):
    parts, sink = make_parts(20, head=RecordingHead(fail_at=4))
    with pytest.raises(RuntimeError, match="head failed"):
        drive(parts, ControllerSettings(), LoopSettings(telemetry_path=tmp_path / "t.jsonl"), log=lambda s: None)
    assert sink.events and all_released(sink)
    records = read_jsonl(tmp_path / "t.jsonl")
    assert [r["event"] for r in records[-2:]] == ["error", "summary"]
    assert records[-1]["stopped_by"] == "RuntimeError" and records[-1]["decisions"] == 3


def test_ctrl_c_releases_keys():
    def interrupt(i):
        if i == 3:
            raise KeyboardInterrupt

    parts, sink = make_parts(20, on_grab=interrupt)
    with pytest.raises(KeyboardInterrupt):
        drive(parts, ControllerSettings(), LoopSettings(), log=lambda s: None)
    assert sink.events and all_released(sink)


def test_watchdog_releases_keys_while_the_loop_stalls():
    sink = RecordingSink()
    stall = {}

    def stall_on_third_call(calls):
        if calls == 3:  # the loop is stuck here until the watchdog lets go of w (or 10 s pass)
            deadline = time.monotonic() + 10
            while "w" in sink.down and time.monotonic() < deadline:
                time.sleep(0.005)
            stall["w released"] = "w" not in sink.down

    with KeyScheduler(sink) as scheduler:
        parts, _ = make_parts(6, clock=scheduler.clock, scheduler=scheduler,
                              backbone=CountingBackbone(on_call=stall_on_third_call))
        summary = drive(parts, ControllerSettings(), LoopSettings(watchdog_s=0.05), log=lambda s: None)
    assert stall == {"w released": True}
    assert summary.watchdog_releases >= 1
    w_events = [kind for _, key, kind in sink.events if key == "w"]
    assert w_events[:3] == ["down", "up", "down"]  # released by the watchdog, pressed again after the stall
    assert all_released(sink)


def test_sigterm_to_the_process_releases_every_key(tmp_path):
    log = tmp_path / "events.txt"
    code = textwrap.dedent(f"""
        import numpy as np, torch
        from data.errors import run_cli
        from drive.controller import ControllerSettings
        from drive.keys import KeyScheduler, RecordingSink
        from drive.loop import DriveParts, LoopSettings, drive
        out = open({str(log)!r}, "w", buffering=1)
        sink = RecordingSink(on_event=lambda t, key, kind: out.write(f"{{key}} {{kind}}\\n"))
        frame = np.zeros((14, 14, 3), np.uint8)
        parts = DriveParts(grab=lambda: frame, preprocess_fn=lambda f: torch.from_numpy(f).float(),
                           features_fn=lambda x: x.mean(dim=(1, 2, 3))[:, None],
                           head_fn=lambda seq: torch.tensor({LOGITS}), scheduler=KeyScheduler(sink))
        run_cli(lambda: drive(parts, ControllerSettings(), LoopSettings(), log=lambda s: print(s, flush=True)))
    """)
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (log.exists() and "w down" in log.read_text()) and time.monotonic() < deadline:
            assert child.poll() is None, child.communicate()
            time.sleep(0.02)
        child.send_signal(signal.SIGTERM)
        stdout, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 128 + signal.SIGTERM, stderr  # our handler, not the default death
    assert "Traceback" not in stderr and "stopped by Terminated" in stdout
    last = {}
    for line in log.read_text().splitlines():
        key, kind = line.split()
        last[key] = kind
    assert last.get("w") == "up" and all(kind == "up" for kind in last.values())


def test_bad_settings_refused_before_any_key_or_file(tmp_path):
    existing = tmp_path / "old.jsonl"
    existing.write_text("keep me\n")
    parts, sink = make_parts(4)
    with pytest.raises(UserError, match="--telemetry"):
        drive(parts, ControllerSettings(), LoopSettings(telemetry_path=existing), log=lambda s: None)
    assert existing.read_text() == "keep me\n"
    with pytest.raises(UserError, match="--max-steer"):
        drive(parts, ControllerSettings(max_steer=2), LoopSettings(telemetry_path=tmp_path / "new.jsonl"),
              log=lambda s: None)
    with pytest.raises(UserError, match="--mode"):
        drive(parts, ControllerSettings(), LoopSettings(mode="fast"), log=lambda s: None)
    assert not (tmp_path / "new.jsonl").exists() and sink.events == []
