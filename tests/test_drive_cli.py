"""python -m drive on the embedded game: the CLI path, game-time keys, reproducible evaluation, video, errors."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from data.episode import Episode
from data.errors import UserError
from data.profiles import load_profile
from data.screen import Region
import drive.game
from drive.__main__ import main
from drive.carracing.game import CarRacingGame, GameSettings, RealTimeGame, TrackStats
from data.flags import parse_seeds
from drive.carracing.evaluate import GameKeys, TrackRun, evaluate_agent, evaluate_expert, format_table
from extract_features.models import DinoV2
from tests.test_agent import make_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("carracing"))[0]


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.mark.parametrize("mode", ["ring", "recompute"])
def test_one_backbone_call_per_decision_through_the_cli(ckpt, mode, tmp_path, monkeypatch, capsys):
    calls = []
    forward = DinoV2.forward
    monkeypatch.setattr(DinoV2, "forward", lambda self, x, **kw: calls.append(len(x)) or forward(self, x, **kw))
    main(["--ckpt", str(ckpt), "--latency", "0.1", "--max-steps", "100", "--features", mode, "--max-steer", "0.2",
          "--telemetry", str(tmp_path / "t.jsonl")])
    records = read_jsonl(tmp_path / "t.jsonl")
    decisions = [r for r in records if r["event"] == "decision"]
    assert len(decisions) == 20  # 100 physics steps of 20 ms, one decision per 0.1 s of game time
    assert len(calls) == len(decisions)
    assert calls == [1] * 20 if mode == "ring" else calls == [3] * 20
    assert records[-1]["event"] == "summary" and records[-1]["stopped_by"] == "source_end"
    assert all(r["interval_s"] == pytest.approx(0.1) for r in decisions)  # game time, not wall time
    assert all((r["hold_s"]["a"] or 0) <= 0.02 + 1e-9 and (r["hold_s"]["d"] or 0) <= 0.02 + 1e-9 for r in decisions)
    assert "track 1000: reward" in capsys.readouterr().out


def test_game_keys_hold_plans_in_game_time():
    game = CarRacingGame()
    try:
        game.reset(seed=3)
        keys = GameKeys(RealTimeGame(game, latency=0.1))
        assert keys.clock() == 0.0
        keys.apply({"w": math.inf, "a": 0.04})
        assert keys.clock() == pytest.approx(0.1)  # the old (empty) plan ran for the thinking time
        assert keys.held_keys() == {"w", "a"}
        keys.apply({"w": math.inf, "d": 0.06})  # the first plan ran 0.1 s: w all of it, a 0.04 s
        assert keys.held_seconds() == pytest.approx({"w": 0.1, "a": 0.04, "s": 0.0, "d": 0.0})
        keys.apply({})
        assert keys.held_seconds() == pytest.approx({"w": 0.2, "a": 0.04, "s": 0.0, "d": 0.06})
        assert keys.held_keys() == frozenset() and game.stats.steps == 15
        keys.apply({"s": math.inf})
        keys.release_all()
        assert game.hold == {"w": 0.0, "a": 0.0, "s": 0.0, "d": 0.0}
    finally:
        game.close()


def test_eval_is_reproducible_and_tables_the_expert(ckpt, tmp_path, capsys):
    main(["--ckpt", str(ckpt), "--eval", "--seeds", "1000-1001", "--latency", "0.1", "--max-steps", "150",
          "--table", str(tmp_path / "eval.md")])
    table, note = (tmp_path / "eval.md").read_text().split("\n\nnote: ")
    assert note.startswith("the backbone has RANDOM weights")  # the fixture's backbone is random
    assert table in capsys.readouterr().out
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith(("| 100", "| all"))]
    assert [(r[0], r[1]) for r in rows] == [
        ("| 1000", "agent"), ("| 1000", "expert @ 0.1 s"), ("| 1000", "expert @ 0 s"),
        ("| 1001", "agent"), ("| 1001", "expert @ 0.1 s"), ("| 1001", "expert @ 0 s"),
        ("| all 2", "agent"), ("| all 2", "expert @ 0.1 s"), ("| all 2", "expert @ 0 s")]
    # a second run, through the functions `make demo` and ablations call, gives the very same table
    settings = GameSettings(max_steps=150)
    agent = evaluate_agent(ckpt, [1000, 1001], 0.1, game_settings=settings, log=lambda s: None)
    expert = evaluate_expert([1000, 1001], 0.1, settings)
    again = format_table({"agent": agent, "expert @ 0.1 s": expert, "expert @ 0 s": evaluate_expert([1000, 1001], 0.0, settings)},
                         compare=("agent", "expert @ 0.1 s"))
    assert again == table
    assert [r.decisions for r in agent] == [30, 30] and agent[0].decisions_per_s == pytest.approx(10.0)
    for row, run in zip([rows[0], rows[3], rows[1], rows[4]], agent + expert):
        assert row[2:5] == [f"{run.reward:.1f}", f"{100 * run.tile_share:.1f}", str(run.off_track_events)]
    assert expert[0].tile_share > agent[0].tile_share  # an untrained head does not out-drive the expert
    assert "agent mean reward is " in table and "of expert @ 0.1 s's (2 tracks)" in table


def test_video_has_a_frame_per_decision(ckpt, tmp_path, capsys):
    main(["--ckpt", str(ckpt), "--latency", "0.1", "--max-steps", "50", "--video", str(tmp_path / "v.mp4"),
          "--telemetry", str(tmp_path / "t.jsonl")])
    decisions = [r for r in read_jsonl(tmp_path / "t.jsonl") if r["event"] == "decision"]
    video = cv2.VideoCapture(str(tmp_path / "v.mp4"))
    frames = []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == len(decisions) == 10
    assert frames[0].shape == (400 + 64, 600, 3)
    assert frames[-1][:400].std() > 5  # the game's picture, not a blank frame
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.jsonl", "v.mp4"]  # no partial file left


def test_wall_time_run_drives_until_the_game_ends(ckpt, capsys):
    main(["--ckpt", str(ckpt), "--max-steps", "25"])
    out = capsys.readouterr().out
    assert "stopped by source_end" in out and "track 1000: reward" in out


def test_format_table_totals():
    runs = [TrackRun(seed=1, steps=1000, reward=100.0, tiles_visited=50, tiles_total=100, off_track_events=1,
                     wheel_travel=20.0, decisions=200, crashes=3),
            TrackRun(seed=2, steps=500, reward=300.0, tiles_visited=100, tiles_total=100, lap_finished=True,
                     wheel_travel=5.0, decisions=100)]
    reference = [TrackStats(seed=1, steps=1000, reward=400.0), TrackStats(seed=2, steps=1000, reward=400.0)]
    table = format_table({"agent": runs, "expert": reference}, compare=("agent", "expert"))
    lines = table.splitlines()
    assert lines[0].startswith("| track | driver | reward | tiles % | off-track | crashes |")
    assert lines[2] == "| 1 | agent | 100.0 | 50.0 | 1 | 3 | 1.00 | 10.0 | no |"
    assert lines[5] == "| 2 | expert | 400.0 | 0.0 | 0 | 0 | 0.00 | – | no |"
    assert lines[6] == ("| all 2 | agent | 200.0 ± 100.0 [100.0, 300.0] | 75.0 ± 25.0 [50.0, 100.0] | 0.5 | 1.5 | 0.75 | "
                        "10.0 | 1/2 |")
    assert lines[-1] == "agent mean reward is 50.0 % of expert's (2 tracks)"
    with pytest.raises(ValueError, match="same tracks"):
        format_table({"agent": runs, "expert": reference[:1]})


def test_parse_seeds():
    assert parse_seeds("1000-1002") == [1000, 1001, 1002]
    assert parse_seeds("1,5-6") == [1, 5, 6]
    for bad in ("a-b", "5-3", ""):
        with pytest.raises(UserError, match="--seeds"):
            parse_seeds(bad)


def test_cli_errors_are_one_line_and_write_nothing(ckpt, tmp_path):
    result = subprocess.run([sys.executable, "-m", "drive", "--ckpt", str(ckpt), "--game", "gta5", "--latency", "0.1"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr == "error: --latency works with --game carracing only\n"
    existing = tmp_path / "old.jsonl"
    existing.write_text("keep\n")
    cases = [(["--telemetry", str(existing)], "already exists"),
             (["--table", str(tmp_path / "t.md")], "--table is written by --eval"),
             (["--video", str(tmp_path / "v.avi")], "must end in .mp4"),
             (["--eval", "--telemetry", str(tmp_path / "t.jsonl")], "single run"),
             (["--region", "0,0,800,600"], "--region works with --game gta5 only"),
             (["--max-steer", "2"], "--max-steer"),
             (["--steer-gain", "0"], "--steer-gain 0.0: must be > 0"),
             (["--latency", "0"], "--latency 0.0: must be > 0")]
    for extra, message in cases:
        with pytest.raises(UserError, match=message):
            main(["--ckpt", str(ckpt)] + extra)
    gta_ckpt, _ = make_checkpoint(tmp_path / "gta", profile="gta5")
    with pytest.raises(UserError, match="trained on gta5 frames, not carracing; drive it with --game gta5"):
        main(["--ckpt", str(gta_ckpt), "--video", str(tmp_path / "v.mp4")])
    assert existing.read_text() == "keep\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gta", "old.jsonl"]


def test_record_expert_cli_writes_episodes(tmp_path, capsys):
    from tools.record import main as record

    record(["--game", "carracing", "--expert", "--minutes", "0.1", "--seed", "5", "--stuck-share", "0",
            "--out", str(tmp_path / "rec")])
    episodes = sorted((tmp_path / "rec").iterdir())
    assert [p.name for p in episodes] == ["expert-seed5-000-regular.zarr"]  # 6 s: less than one track
    episode = Episode(episodes[0])
    assert len(episode) == 60 and episode.frame_shape == load_profile("carracing").frame_shape and episode.complete
    assert (episode.attrs["track_seed"], episode.attrs["source"], episode.profile) == (5, "expert", "carracing")
    assert episode.keys[:].any(axis=0)[0]  # the expert pressed w
    assert "expert-seed5-000-regular.zarr: track 5, 60 frames" in capsys.readouterr().out
    for argv, message in [(["--expert", "--minutes", "1"], "pass both --game carracing and --expert"),
                          (["--game", "carracing", "--expert"], "needs --minutes"),
                          (["--game", "carracing", "--expert", "--minutes", "1", "--kind", "stuck"], "--kind is for screen"),
                          (["--seed", "3"], "--seed works with --game carracing --expert only"),
                          (["--game", "carracing", "--expert", "--minutes", "1", "--stuck-share", "2"], "--stuck-share")]:
        with pytest.raises(UserError, match=message):
            record(argv + ["--out", str(tmp_path / "other")])
    assert not (tmp_path / "other").exists()


def test_gta5_path_with_a_fake_windows(tmp_path, monkeypatch, capsys):
    """The whole --game gta5 path on fake Windows and fake time: it waits for the game window's focus, counts
    down, drives through SendInput, follows the window when it moves, saves the first frame, shows a status
    line, and lets go of every key. Each grab takes 0.1 s of fake time, so no watchdog depends on speed."""
    from drive.gta5.session import System
    from drive.gta5.scancodes import SCAN_CODES
    from tests.test_gta5 import FakeScreen, FakeWindows, window
    from tests.test_loop import FakeClock

    clock = FakeClock()
    api = FakeWindows({3: window(), 9: window(title="cmd", cls="ConsoleWindowClass")}, foreground=9)
    screens = []

    def screen(region):
        screens.append(FakeScreen(region))
        original = screens[-1].grab

        def grab():
            clock.t += 0.1
            if len(screens[-1].grabbed) == 1:
                api.windows[3]["region"] = Region(300, 60, 800, 600)  # the user drags the window
            return original()
        screens[-1].grab = grab
        return screens[-1]

    def sleep(seconds):
        clock.t += seconds
        if clock.t >= 1.0:
            api.foreground = 3  # the user clicks into the game after a second

    system = System(api=api, screen=screen, clock=clock, precise_sleep=lambda s: None, sleep=sleep)
    monkeypatch.setattr(System, "real", classmethod(lambda cls: system))
    gta_ckpt, _ = make_checkpoint(tmp_path / "gta", profile="gta5")
    main(["--ckpt", str(gta_ckpt), "--game", "gta5", "--no-hotkeys", "--countdown", "0.5", "--max-decisions", "4",
          "--telemetry", str(tmp_path / "t.jsonl"), "--first-frame", str(tmp_path / "first.png")])
    records = read_jsonl(tmp_path / "t.jsonl")
    assert [r["event"] for r in records] == ["pause", "resume"] + ["decision"] * 4 + ["summary"]
    assert records[1]["t"] == pytest.approx(1.5, abs=0.051)  # focus at 1.0 s, then the 0.5 s countdown
    assert records[-1]["stopped_by"] == "max_decisions"
    grabbed = screens[0].grabbed
    assert grabbed == [Region(100, 50, 800, 600)] * 2 + [Region(300, 60, 800, 600)] * 2
    assert cv2.imread(str(tmp_path / "first.png")).shape == (180, 240, 3)
    scans = {v: k for k, v in SCAN_CODES.items() if k in "wasd"}
    last = {scans[scan]: up for scan, up in api.sent}
    assert last and all(last.values())  # every key pressed is up at the end
    out = capsys.readouterr().out
    assert "game window 'Grand Theft Auto V' (class grcWindow): capturing 800x600 at (100, 50)" in out
    assert "game window moved: capturing 800x600 at (300, 60)" in out
    assert f"first frame the agent sees (240x180): {tmp_path / 'first.png'}" in out
    assert "keys: sendinput; hotkeys: none (Ctrl-C stops)" in out
    assert "\rp w " in out and "decisions/s | latency" in out  # the live status line


def test_gta5_takeover_on_fake_windows_records_a_correction(tmp_path, monkeypatch, capsys):
    """--record-corrections on the whole gta5 path: the player's physical press of a (from the injected
    key source) takes over, every agent key is up, the correction's lead-up is context, and the agent drives
    again after --handback."""
    from drive.gta5.session import System
    from drive.takeover import KeyEvent
    from tests.test_gta5 import FakeScreen, FakeWindows, window
    from tests.test_loop import FakeClock

    clock = FakeClock()
    api = FakeWindows({3: window()}, foreground=3)

    def screen(region):
        fake = FakeScreen(region)
        original = fake.grab

        def grab():
            clock.t += 0.1
            return original()
        fake.grab = grab
        return fake

    script = [(0.75, KeyEvent("d", True, 0.75, injected=True)), (0.8, KeyEvent("a", True, 0.8)),
              (1.3, KeyEvent("a", False, 1.3))]
    taken = []

    def player_keys(takeover_key):
        assert takeover_key == "y"

        def events():
            due = [e for t, e in script if t <= clock.t and e not in taken]
            taken.extend(due)
            return due
        return events

    system = System(api=api, screen=screen, clock=clock, precise_sleep=lambda s: None, sleep=lambda s: setattr(clock, "t", clock.t + s),
                    player_keys=player_keys)
    monkeypatch.setattr(System, "real", classmethod(lambda cls: system))
    gta_ckpt, _ = make_checkpoint(tmp_path / "gta", profile="gta5")
    main(["--ckpt", str(gta_ckpt), "--game", "gta5", "--no-hotkeys", "--countdown", "0", "--max-seconds", "4",
          "--telemetry", str(tmp_path / "t.jsonl"), "--first-frame", str(tmp_path / "first.png"),
          "--record-corrections", str(tmp_path / "corr"), "--handback", "1", "--context", "0.5"])
    drivers = [r["driver"] for r in read_jsonl(tmp_path / "t.jsonl") if r["event"] == "driver"]
    assert drivers == ["player", "agent"]
    (path,) = sorted((tmp_path / "corr").iterdir())
    episode = Episode(path)
    assert episode.kind == "correction" and 1 <= episode.context_frames < len(episode)
    keys = episode.keys[:]
    assert keys[episode.context_frames:, 1].any() and not keys[episode.context_frames:, 3].any()  # a, never d
    out = capsys.readouterr().out
    assert "take over: press w/a/s/d or hold y" in out and "player drives" in out and "agent drives" in out


@pytest.mark.skipif(sys.platform != "linux", reason="a machine without a display: Linux without DISPLAY")
def test_gta5_without_a_display_is_one_line_exit_2(ckpt, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    for extra, message in [([], "error: finding the game window works on Windows only; pass --region"),
                           (["--region", "0,0,600,400"], "error: screen capture failed (XError: Cannot connect to display")]:
        run = subprocess.run([sys.executable, "-m", "drive", "--ckpt", str(ckpt), "--game", "gta5", "--keys", "virtual",
                              "--first-frame", str(tmp_path / "f.png"), *extra],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
        assert run.stderr.startswith(message)
    assert "set DISPLAY, e.g. DISPLAY=:0" in run.stderr  # the capture error names the fix
    assert not (tmp_path / "f.png").exists()


def test_controller_flags_override_the_checkpoint_defaults():
    from drive.__main__ import controller_settings, parser
    from drive.controller import ControllerSettings
    defaults = ControllerSettings(proportional_gas=True, max_steer=0.8, steer_gain=1.2)
    keep = controller_settings(parser().parse_args(["--ckpt", "c.pt"]), defaults)
    assert keep == defaults
    changed = controller_settings(parser().parse_args(["--ckpt", "c.pt", "--threshold-gas", "--thresholded"]), defaults)
    assert not changed.proportional_gas and not changed.proportional and changed.max_steer == 0.8
    assert changed.steer_gain == 1.2
    assert controller_settings(parser().parse_args(["--ckpt", "c.pt", "--steer-gain", "1.5"]), defaults).steer_gain == 1.5
    on = controller_settings(parser().parse_args(["--ckpt", "c.pt", "--proportional-gas"]), ControllerSettings())
    assert on.proportional_gas
    with pytest.raises(SystemExit):  # one or the other
        parser().parse_args(["--ckpt", "c.pt", "--proportional-gas", "--threshold-gas"])


TOY_GAME = '''
"""A third game for python -m drive: a few grey frames, keys into a virtual keyboard."""
import numpy as np

from data.errors import UserError
from drive.keys import KeyScheduler, RecordingSink
from drive.loop import DriveParts, LoopSettings, drive as run_loop

NAMES = ("toy",)
FLAGS = ("toy_frames",)


def add_arguments(p):
    p.add_argument("--toy-frames", type=int, help="frames the toy game shows (default: 3)")


def check(args):
    if args.toy_frames is not None and args.toy_frames < 1:
        raise UserError(f"--toy-frames {args.toy_frames}: must be at least 1")


def drive(agent, controller, args):
    frames = iter([np.full(agent.profile.frame_shape, 40 * i, np.uint8) for i in range(args.toy_frames or 3)])
    sink = RecordingSink()
    parts = DriveParts(grab=lambda: next(frames, None), preprocess_fn=agent.preprocess_fn,
                       features_fn=agent.features_fn, head_fn=agent.head_fn,
                       scheduler=KeyScheduler(sink, start_thread=False))
    summary = run_loop(parts, controller, LoopSettings(seq_len=agent.seq_len, stride_s=agent.stride_s),
                       log=lambda s: None)
    print(f"toy: {summary.decisions} decisions, stopped by {summary.stopped_by}")
'''


def test_a_new_game_is_one_module_and_one_registry_line(ckpt, tmp_path, monkeypatch, capsys):
    """The Game protocol: a module with NAMES, FLAGS, add_arguments, check and drive, named in GAMES."""
    (tmp_path / "toy_game.py").write_text(TOY_GAME)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(drive.game.GAMES, "toy", "toy_game")
    main(["--ckpt", str(ckpt), "--game", "toy", "--toy-frames", "4"])
    assert "toy: 4 decisions, stopped by source_end" in capsys.readouterr().out
    with pytest.raises(UserError, match="^--toy-frames 0: must be at least 1$"):
        main(["--ckpt", str(ckpt), "--game", "toy", "--toy-frames", "0"])
    with pytest.raises(UserError, match="^--toy-frames works with --game toy only$"):
        main(["--ckpt", str(ckpt), "--game", "carracing", "--toy-frames", "2"])
    with pytest.raises(UserError, match="^--latency works with --game carracing only$"):
        main(["--ckpt", str(ckpt), "--game", "toy", "--latency", "0.1"])
