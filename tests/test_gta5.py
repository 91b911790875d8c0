"""The GTA V side on Linux, with Windows injected: window matching, focus, scan codes, hotkeys, capture errors."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from data.episode import Episode
from data.errors import UserError
from data.screen import Region
from drive.controller import ControllerSettings
from drive.gta5.capture import ScreenSource, WindowCapture
from drive.gta5.hotkeys import HotkeyPoller
from drive.gta5.key_reader import ScanCodeKeys
from drive.gta5.scancodes import SCAN_CODES, key_name
from drive.gta5.send_input import FocusedOnlySink, SendInputSink
from drive.gta5.window import GameWindow, WindowSpec, find_game_window
from drive.keys import RecordingSink
from drive.loop import LoopSettings, drive
from tests.test_loop import FakeClock, all_released, make_parts, read_jsonl

REPO = Path(__file__).resolve().parents[1]
GTA = WindowSpec("Grand Theft Auto V", ("grcWindow", "sgaWindow"), (800, 600))
VK_Q, VK_W, VK_Z, VK_F9 = 0x51, 0x57, 0x5A, 0x78
QWERTY = {0x11: VK_W, 0x1E: 0x41, 0x1F: 0x53, 0x20: 0x44, 0x14: 0x54, 0x43: VK_F9}
AZERTY = {**QWERTY, 0x11: VK_Z, 0x1E: VK_Q}  # the key left of E prints Z, the key left of S prints Q


class FakeWindows:
    """A WindowsApi over a table of windows: hwnd → (title, class, client region, visible, minimised)."""

    def __init__(self, windows, foreground=0, layout=QWERTY):
        self.windows = {h: dict(zip(("title", "cls", "region", "visible", "minimised"), w)) for h, w in windows.items()}
        self.foreground, self.layout = foreground, layout
        self.down_vks: set[int] = set()
        self.sent: list[tuple[int, bool]] = []

    def top_level_windows(self):
        return list(self.windows)

    def title(self, hwnd):
        return self.windows[hwnd]["title"]

    def class_name(self, hwnd):
        return self.windows[hwnd]["cls"]

    def is_visible(self, hwnd):
        return self.windows[hwnd]["visible"]

    def is_minimised(self, hwnd):
        return self.windows[hwnd]["minimised"]

    def exists(self, hwnd):
        return hwnd in self.windows

    def client_region(self, hwnd):
        return self.windows[hwnd]["region"]

    def foreground_window(self):
        return self.foreground

    def scan_to_vk(self, scan):
        return self.layout.get(scan, 0)

    def key_down(self, vk):
        return vk in self.down_vks

    def send_scan_code(self, scan, up):
        self.sent.append((scan, up))


def window(title="Grand Theft Auto V", cls="grcWindow", size=(800, 600), at=(100, 50), visible=True, minimised=False):
    return (title, cls, Region(*at, *size), visible, minimised)


def test_window_matching_rejects_an_explorer_window_and_the_wrong_size():
    explorer = window(cls="CabinetWClass")  # the install folder open in Explorer: same title, same size
    api = FakeWindows({1: explorer, 2: window(title="Grand Theft Auto V - Notepad", cls="Notepad"), 3: window()})
    assert find_game_window(api, GTA) == 3
    assert find_game_window(FakeWindows({5: window(cls="sgaWindow")}), GTA) == 5  # GTA V Enhanced

    with pytest.raises(UserError, match="class CabinetWClass, not grcWindow/sgaWindow: not the game"):
        find_game_window(FakeWindows({1: explorer}), GTA)
    with pytest.raises(UserError, match="is 1920x1080, the profile expects 800x600"):
        find_game_window(FakeWindows({1: explorer, 3: window(size=(1920, 1080))}), GTA)
    with pytest.raises(UserError, match="minimised"):
        find_game_window(FakeWindows({3: window(minimised=True)}), GTA)
    with pytest.raises(UserError, match="no game window titled"):
        find_game_window(FakeWindows({3: window(visible=False)}), GTA)
    assert find_game_window(FakeWindows({3: window(size=(1920, 1080))}), WindowSpec(GTA.title, GTA.classes)) == 3


def test_game_window_follows_moves_and_focus():
    api = FakeWindows({3: window(), 9: window(title="cmd", cls="ConsoleWindowClass")}, foreground=9)
    game = GameWindow(api, 3)
    assert not game.focused() and game.region() == Region(100, 50, 800, 600)
    api.foreground = 3
    api.windows[3]["region"] = Region(300, 200, 800, 600)
    assert game.focused() and game.region() == Region(300, 200, 800, 600)
    del api.windows[3]
    with pytest.raises(UserError, match="the game window closed"):
        game.region()


@pytest.mark.parametrize("layout", [QWERTY, AZERTY], ids=["qwerty", "azerty"])
def test_keys_are_read_by_scan_code_in_any_layout(layout):
    api = FakeWindows({}, layout=layout)
    keys = ScanCodeKeys(api, ("t", "f9"))
    api.down_vks = {layout[0x11], layout[0x20], VK_F9}  # the physical W and D keys, and F9
    state = keys.poll()
    assert state.wasd.tolist() == [1, 0, 0, 1] and state.down == {"f9"}
    api.down_vks = {VK_W}  # on AZERTY the key printed W is elsewhere: not the key the driver presses as "w"
    assert keys.poll().wasd.tolist() == ([1, 0, 0, 0] if layout is QWERTY else [0, 0, 0, 0])


def test_driver_and_recorder_use_the_same_scan_codes():
    api = FakeWindows({}, layout=AZERTY)
    sink = SendInputSink(api)
    sink.press("w")
    sink.press("a")
    assert api.sent == [(0x11, False), (0x1E, False)]
    api.down_vks = {api.scan_to_vk(scan) for scan, up in api.sent if not up}  # what Windows does with them
    assert ScanCodeKeys(api, ()).poll().wasd.tolist() == [1, 1, 0, 0]
    sink.release("w")
    assert api.sent[-1] == (0x11, True)


def test_hotkey_names_are_validated():
    assert [key_name(n, "--pause-key") for n in ("F9", "Space", "t", " page  up", "escape")] == \
        ["f9", "space", "t", "page up", "esc"]
    assert SCAN_CODES["f9"] == 0x43 and SCAN_CODES["t"] == 0x14 and SCAN_CODES["space"] == 0x39
    for bad in ("f13", "ctrl+t", "", "ä"):
        with pytest.raises(UserError, match="--pause-key .*unknown key"):
            key_name(bad, "--pause-key")


def test_unknown_pause_key_is_one_line_exit_2(tmp_path):
    run = subprocess.run([sys.executable, "-m", "tools.record", "--pause-key", "f13", "--out", str(tmp_path / "r")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == ["error: --pause-key 'f13': unknown key; use a letter, a digit, f1..f12, "
                                               "space, enter, tab, esc, backspace, insert, delete, home, end, page up, "
                                               "page down, or an arrow (up, down, left, right)"]
    assert not (tmp_path / "r").exists()


def test_hotkey_poller_queues_each_press_once():
    api = FakeWindows({})
    poller = HotkeyPoller(ScanCodeKeys(api, ("t", "f9")), sleep=lambda s: None)
    poller.close()  # the thread stops; poll by hand
    api.down_vks = {VK_F9}
    poller.poll_once()
    poller.poll_once()  # still held: not a new press
    api.down_vks = {VK_F9, 0x54}
    poller.poll_once()
    api.down_vks = set()
    poller.poll_once()
    api.down_vks = {VK_F9}
    poller.poll_once()
    assert poller() == ["f9", "t", "f9"] and poller() == []


def test_focused_only_sink_never_presses_into_another_window():
    sink, focus = RecordingSink(FakeClock()), [False]
    guarded = FocusedOnlySink(sink, lambda: focus[0])
    guarded.press("w")
    guarded.release("w")
    focus[0] = True
    guarded.press("a")
    assert [(k, kind) for _, k, kind in sink.events] == [("w", "up"), ("a", "down")] and guarded.skipped == 1


def test_focus_loss_releases_every_key_and_pauses_and_focus_back_counts_down(tmp_path):
    """Fake time: each grab takes 0.125 s, each pause poll 0.05 s. Focus from the start, lost at t=1.0,
    back at t=2.0; a countdown of 0.5 s."""
    clock = FakeClock()
    parts, sink = make_parts(24, clock=clock)
    lost = []

    def focused():
        has = not (1.0 <= clock.t < 2.0)
        if not has and not lost:
            lost.append(set(sink.down))  # what was held the moment focus went
        return has

    def sleep(seconds):
        assert not sink.down  # nothing is held while paused
        clock.t += seconds

    parts.focused, parts.sleep = focused, sleep
    log = []
    settings = LoopSettings(focus_countdown_s=0.5, pause_poll_s=0.05, telemetry_path=tmp_path / "t.jsonl")
    summary = drive(parts, ControllerSettings(), settings, log=log.append)
    records = read_jsonl(tmp_path / "t.jsonl")
    decisions = [r["t_capture"] for r in records if r["event"] == "decision"]
    pauses = [(r["event"], r["by"], r["t"]) for r in records if r["event"] in ("pause", "resume")]
    # start: paused until focus, then the countdown; no decision before t = 0.5
    assert pauses[0] == ("pause", "focus", 0.0) and pauses[1][:2] == ("resume", "focus")
    assert pauses[1][2] == pytest.approx(0.5, abs=0.051) and min(decisions) >= 0.5
    assert pauses[2][:2] == ("pause", "focus") and 1.0 <= pauses[2][2] < 1.0 + 0.125  # seen at the next decision
    assert lost == [{"w", "a"}]  # held when focus went ...
    up_at_loss = [k for t, k, kind in sink.events if kind == "up" and t == pauses[2][2]]
    assert sorted(up_at_loss) == ["a", "w"]  # ... and released at the pause
    assert not [t for t in decisions if 1.0 <= t < 2.5]  # no decision while away nor during the countdown
    assert pauses[3][:2] == ("resume", "focus")
    assert pauses[3][2] == pytest.approx(2.5, abs=0.051)
    assert any("lost focus" in line for line in log) and any("driving in 0.5 s" in line for line in log)
    assert summary.decisions == 23 and all_released(sink)  # 24 frames; the one grabbed as focus went is dropped
    assert summary.active_s == pytest.approx(clock.t - pauses[1][2] - (pauses[3][2] - pauses[2][2]))


def test_status_line_shows_probabilities_keys_rate_and_latency():
    parts, _ = make_parts(6)
    lines = []
    parts.status = lines.append
    drive(parts, ControllerSettings(), LoopSettings(status_every_s=0.25), log=lambda s: None)
    assert len(lines) == 3  # every other decision at 0.125 s apart
    assert lines[-1] == "p w 0.95 a 0.73 s 0.05 d 0.27 | held wa   |  8.0 decisions/s | latency 125.0 ms"


def test_capture_without_a_display_is_one_line_error(monkeypatch):
    if sys.platform != "linux":
        pytest.skip("a headless X display exists only on Linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(UserError, match=r"screen capture failed .*set DISPLAY") as e:
        ScreenSource(Region(0, 0, 800, 600))
    assert "\n" not in str(e.value)


class FakeScreen:
    """What mss would give for a region: a frame whose pixels say where it was taken."""

    def __init__(self, region):
        self.region, self.grabbed = region, []

    def move(self, region):
        self.region = region

    def grab(self):
        self.grabbed.append(self.region)
        rng = np.random.default_rng(len(self.grabbed))
        return rng.integers(0, 256, (self.region.height, self.region.width, 3), dtype=np.uint8)


def test_window_capture_follows_the_window_and_saves_the_first_frame(tmp_path):
    api = FakeWindows({3: window()}, foreground=3)
    screen, log = FakeScreen(Region(100, 50, 800, 600)), []
    capture = WindowCapture(screen, (240, 180), GameWindow(api, 3), tmp_path / "first.png", log.append)
    first = capture.grab()
    api.windows[3]["region"] = Region(400, 300, 800, 600)
    capture.grab()
    assert screen.grabbed == [Region(100, 50, 800, 600), Region(400, 300, 800, 600)]
    assert first.shape == (180, 240, 3)
    saved = cv2.cvtColor(cv2.imread(str(tmp_path / "first.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(saved, first)  # exactly the frame the agent got
    assert log == [f"first frame the agent sees (240x180): {tmp_path / 'first.png'}",
                   "game window moved: capturing 800x600 at (400, 300)"]


def test_record_on_fake_windows_labels_physical_keys_with_azerty(tmp_path, monkeypatch, capsys):
    """python -m tools.record on fake Windows: an Explorer window of the same title is passed over, the
    layout is AZERTY, the player holds the physical W key (printed Z) and presses F9 to start recording."""
    from drive.gta5.session import System
    from tools.record import main as record

    api = FakeWindows({1: window(cls="CabinetWClass"), 3: window()}, foreground=3, layout=AZERTY)
    api.down_vks = {VK_Z, VK_F9}
    monkeypatch.setattr(System, "real", classmethod(lambda cls: System(api=api, screen=FakeScreen)))
    record(["--game", "gta5", "--out", str(tmp_path / "rec"), "--pause-key", "F9", "--fps", "20",
            "--minutes", str(0.5 / 60)])
    [path] = (tmp_path / "rec" / "regular").iterdir()
    episode = Episode(path)
    assert len(episode) > 0 and episode.frames[0].shape == (180, 240, 3)
    assert (episode.keys[:] == [1, 0, 0, 0]).all()  # w, though the layout calls that key Z
    assert episode.attrs["capture"]["region"] == [100, 50, 800, 600]
    assert "game window 'Grand Theft Auto V' (class grcWindow): capturing 800x600 at (100, 50)" in capsys.readouterr().out
