"""The hood-camera profile of the embedded game: projection, frames, minimap under augmentation, traffic
and crashes, and the whole chain (expert recording, DAgger, evaluation) on it."""
import dataclasses
import math

import numpy as np
import pytest

from data.augment import apply_variant, draw_params
from data.episode import Episode
from data.errors import UserError
from data.profiles import load_profile
from drive.carracing.game import CarRacingGame, GameSettings
from drive.carracing.evaluate import evaluate_agent, evaluate_expert, format_table
from drive.carracing.expert import Expert
from drive.carracing.expert_recording import RecordSettings, record_expert
from drive.carracing.hood_game import traffic_items
from drive.carracing.hood_view import HoodCamera, Projection, clip_near
from drive.carracing.traffic import CAR_HALF_LENGTH, Traffic, TrafficSettings, boxes_overlap
from tests.test_agent import make_checkpoint, silent

HOOD = "carracing_hood"


@pytest.fixture(scope="module")
def game():
    g = CarRacingGame(GameSettings(profile=HOOD))
    yield g
    g.close()


def test_a_point_straight_ahead_lands_on_the_centre_column_at_the_expected_row():
    # 168 px wide, 90 degrees: f = 84 px; centre column 83.5 (pixel centres at whole numbers); horizon
    # at half height: row 55.5. A road point 10 ahead of an eye 1.5 up is 84 * 1.5 / 10 = 12.6 rows below it.
    proj = Projection(HoodCamera(height=1.5, ahead=0.0, fov_deg=90.0, horizon=0.5), (168, 112))
    heading = 0.7
    pose = (3.0, -4.0, heading)
    ahead = np.array([3.0 + 10 * math.cos(heading), -4.0 + 10 * math.sin(heading)])
    right = np.array([math.sin(heading), -math.cos(heading)])
    u, v = proj.project(proj.to_camera(ahead, 0.0, pose))
    assert (u, v) == pytest.approx((83.5, 68.1))
    u, v = proj.project(proj.to_camera(ahead + 2 * right, 0.0, pose))  # 2 to the right: 84 * 2 / 10 px right
    assert (u, v) == pytest.approx((100.3, 68.1))
    u, v = proj.project(proj.to_camera(ahead, 1.5, pose))  # at the eye's height: on the horizon
    assert v == pytest.approx(55.5)
    assert proj.row_distance(np.array([68.1])) == pytest.approx([10.0])


def test_clip_near_keeps_the_part_in_front():
    square = np.array([[-1.0, -1, 0], [3, -1, 0], [3, 1, 0], [-1, 1, 0]])  # d from -1 to 3
    clipped = clip_near(square, 0.5)
    assert clipped[:, 0].min() == pytest.approx(0.5) and len(clipped) == 4
    assert sorted(map(tuple, clipped[:, :2].round(6))) == [(0.5, -1), (0.5, 1), (3, -1), (3, 1)]
    assert len(clip_near(square - [5, 0, 0], 0.5)) == 0


def test_hood_frames_show_sky_road_minimap_and_traffic_but_no_speed(game):
    profile = load_profile(HOOD)
    w, h = profile.frame_size
    assert w % 14 == 0 and h % 14 == 0
    game.reset(1000)
    frame = game.frame()
    assert frame.shape == profile.frame_shape and frame.dtype == np.uint8
    sky = frame[:20].reshape(-1, 3).astype(int)
    assert (sky[:, 2] > sky[:, 0] + 40).all()  # blue above the horizon
    centre = frame[h - 10, w // 2].astype(int)
    assert abs(centre[0] - centre[1]) < 10 and abs(centre[1] - centre[2]) < 10  # grey road under the car
    # a traffic car placed 20 ahead on the road shows up around the centre column, above the road's bottom
    car = game.car_state()
    view = game.view
    pose = (car.x, car.y, car.heading)
    ahead = (car.x + 20 * math.cos(car.heading), car.y + 20 * math.sin(car.heading), car.heading)
    empty, busy = view.render(pose, []), view.render(pose, [(ahead, (200, 40, 40))])
    rect = profile.hud["minimap"]
    cols = np.flatnonzero((empty[:rect.y0] != busy[:rect.y0]).any(axis=(0, 2)))
    assert abs(cols.mean() - (w - 1) / 2) < 3 and 8 < len(cols) < w / 2
    on_map = (empty[rect.slices] != busy[rect.slices]).any(axis=2)  # and as a dot on the minimap, ahead of the arrow
    assert on_map.any() and np.flatnonzero(on_map.any(axis=1)).max() < 0.68 * (rect.y1 - rect.y0)
    # the frame depends on where the car is, not how fast it goes: no speedometer
    game.advance(2.0, {"w": math.inf})
    moving = game.car_state()
    assert moving.speed > 20
    still = view.render((moving.x, moving.y, moving.heading), traffic_items(game.traffic))
    np.testing.assert_array_equal(game.frame(), still)


def test_minimap_rectangle_comes_out_of_every_variant_unchanged(game):
    profile = load_profile(HOOD)
    rect = profile.hud["minimap"]
    assert {"flip", "warp", "jitter"} <= set(profile.augment.names)
    game.reset(1001)
    frames = []
    for _ in range(4):
        game.advance(0.5, {"w": math.inf})
        frames.append(game.frame())
    frames = np.stack(frames)
    keys = np.zeros((4, 4), np.uint8)
    keys[:, 0] = 1  # w alone: the warp may change these frames
    changed = set()
    for variant in profile.augment.variants:
        for block in range(4):
            out, _ = apply_variant(frames, keys, variant, profile, seed=0, episode="ep", block=block)
            expected = frames[:, rect.y0:rect.y1, rect.x0:rect.x1]
            if draw_params(variant, seed=0, episode="ep", block=block).get("flip"):
                expected = expected[:, :, ::-1]
            np.testing.assert_array_equal(out[:, rect.y0:rect.y1, rect.x0:rect.x1], expected)
            if (out != frames).any():
                changed.add(variant.name)
    assert changed == set(profile.augment.names) - {"clean"}  # the rest of the frame did change


def test_traffic_is_placed_by_the_track_seed(game):
    def traffic_after(seed):
        game.reset(seed)
        game.advance(1.0)
        return game.traffic.poses(), game.traffic.speed, game.traffic.colors

    first, again, other = traffic_after(1003), traffic_after(1003), traffic_after(1004)
    assert len(first[0]) == load_profile(HOOD).game["traffic"]
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert first[2] == again[2]
    assert not np.allclose(first[1], other[1])
    s = TrafficSettings()
    assert (first[1] >= s.speed[0]).all() and (first[1] <= s.speed[1]).all()
    game.reset(1003)  # none starts near the start line
    assert (np.abs(game.traffic.gaps(0)) >= s.clear_start).all()


def test_traffic_queues_behind_a_slower_car():
    track = np.stack([np.cos(np.linspace(0, 2 * np.pi, 200, endpoint=False)),
                      np.sin(np.linspace(0, 2 * np.pi, 200, endpoint=False))], axis=1) * 100
    traffic = Traffic(track, 0, 2, TrafficSettings(clear_start=10.0))
    traffic.s = np.array([100.0, 130.0])
    traffic.speed = np.array([40.0, 10.0])
    for _ in range(200):
        traffic.step(0.02)
    assert traffic.s[1] == pytest.approx(130.0 + 10.0 * 4, abs=1e-6)
    assert traffic.s[1] - traffic.s[0] == pytest.approx(traffic.settings.follow_gap)


def test_hitting_a_traffic_car_is_a_crash_and_costs_reward():
    results = {}
    for cars in (0, 5):
        g = CarRacingGame(GameSettings(profile=HOOD, traffic=cars))
        g.reset(1002)
        x, y, heading = Traffic(g.track_xy, 1002, 5).poses()[0]
        g.place_car(x - 3 * math.cos(heading), y - 3 * math.sin(heading), heading)  # nose into its tail
        g.advance(0.02)
        first = (g.stats.crashes, g.stats.reward)
        g.advance(0.5)  # the traffic car drives off: the contact is one crash, not one per step
        results[cars] = first, g.stats.crashes
        g.close()
    (crashes, reward), later = results[5]
    assert crashes == 1 and later == 1
    assert results[0][0][0] == 0
    assert results[0][0][1] - reward == pytest.approx(TrafficSettings().crash_penalty)
    assert boxes_overlap((0, 0, 0), (2 * CAR_HALF_LENGTH - 0.1, 0, 0))
    assert not boxes_overlap((0, 0, 0), (2 * CAR_HALF_LENGTH + 0.1, 0, 0))
    assert not boxes_overlap((0, 0, 0), (0, 2.6, math.pi))  # side by side in two lanes


def test_the_expert_overtakes_traffic(game):
    game.reset(1000)
    expert = Expert()
    expert.reset(game)
    passed, before = 0, None
    left = []
    while not game.done:
        hold = expert.decide(game)
        game.advance(0.1, hold)
        gap = game.traffic.gaps(expert.index)
        if before is not None:
            passed += int(np.sum((before > 0) & (gap <= 0) & (before < 20)))
        before = gap
        left.append(game.traffic.pass_offset(expert.index, game.car_state().forward_speed))
    assert passed >= 2 and game.stats.crashes == 0
    assert 0 < np.mean(np.array(left) > 0) < 0.6  # in the passing lane only while passing


def test_traffic_needs_the_hood_view():
    with pytest.raises(UserError, match="--traffic 3.*carracing_hood"):
        CarRacingGame(GameSettings(traffic=3))
    with pytest.raises(UserError, match="--traffic -1"):
        CarRacingGame(GameSettings(profile=HOOD, traffic=-1))
    crowded = CarRacingGame(GameSettings(profile=HOOD, traffic=500))
    with pytest.raises(UserError, match="--traffic 500: more cars than track 1000 holds"):
        crowded.reset(1000)
    crowded.close()
    g = CarRacingGame(GameSettings(profile=HOOD, traffic=0))
    g.reset(1000)
    assert len(g.traffic) == 0 and g.frame().shape == (112, 168, 3)
    g.close()


def test_clis_take_the_hood_profile_and_refuse_traffic_elsewhere(tmp_path):
    from drive.__main__ import main as drive
    from tools.record import main as record

    for argv, message in [(["--game", "carracing", "--expert", "--minutes", "1", "--traffic", "2"], "--traffic 2: the carracing"),
                          (["--game", HOOD, "--expert", "--minutes", "1", "--traffic", "-1"], "--traffic -1"),
                          (["--traffic", "2"], "--traffic works with --game carracing")]:
        with pytest.raises(UserError, match=message):
            record(argv + ["--out", str(tmp_path / "rec")])
    assert not (tmp_path / "rec").exists()
    for argv, message in [(["--game", "gta5", "--traffic", "2"], "--traffic works with --game carracing"),
                          (["--traffic", "2"], "--traffic 2: the carracing")]:
        with pytest.raises(UserError, match=message):
            drive(["--ckpt", str(tmp_path / "none.pt")] + argv)
    from tools.demo import main as demo
    for argv, message in [(["--game", "carracing", "--traffic", "2"], "--traffic 2: the top-down view cannot draw"),
                          (["--game", HOOD, "--traffic", "-1"], "--traffic -1: must be >= 0")]:
        with pytest.raises(UserError, match=message):
            demo(argv + ["--out", str(tmp_path / "demo")])
    assert not (tmp_path / "demo").exists()
    record(["--game", HOOD, "--expert", "--minutes", "0.02", "--traffic", "0", "--out", str(tmp_path / "rec")])
    (path,) = (tmp_path / "rec").iterdir()
    assert Episode(path).profile == HOOD and len(Episode(path)) == 12


def test_expert_recording_dagger_and_eval_on_the_hood_profile(tmp_path):
    hood = GameSettings(profile=HOOD, max_steps=100)
    settings = RecordSettings(game=hood, stuck_share=1.0, stuck_pad_seconds=0.3, stuck_max_seconds=1.0)
    paths = record_expert(tmp_path / "rec", minutes=0.05, seed=3, settings=settings)
    ep = Episode(paths[0])
    assert ep.profile == HOOD and ep.frame_shape == (112, 168, 3) and paths[0].name.endswith("stuck.zarr")
    assert ep.attrs["capture"]["size"] == [504, 336]
    frames = ep.frames[:]
    assert len(frames) > 5 and (frames[-1] != frames[3]).any()

    ckpt, _ = make_checkpoint(tmp_path / "agent", profile=HOOD)
    from drive.carracing.dagger import record_dagger
    dagger = record_dagger(ckpt, tmp_path / "rec", 0.02, seed=500, settings=dataclasses.replace(settings, stuck_share=0.0),
                           log=silent)
    assert Episode(dagger[0]).profile == HOOD and len(Episode(dagger[0])) == 12
    runs = evaluate_agent(ckpt, [1000], latency=0.1, game_settings=hood, video=tmp_path / "drive.mp4", log=silent)
    assert (tmp_path / "drive.mp4").stat().st_size > 0 and runs[0].steps == 100
    table = format_table({"agent": runs, "expert": evaluate_expert([1000], 0.1, hood)})
    assert "| crashes |" in table.splitlines()[0]
    with pytest.raises(UserError, match="carracing_hood"):
        evaluate_agent(ckpt, [1000], latency=0.1, game_settings=GameSettings(max_steps=10), log=silent)


def test_demo_refuses_recordings_of_the_other_view(tmp_path):
    from tests.test_agent import write_profile_episode
    from drive.carracing.demo import DemoSettings, run

    write_profile_episode(tmp_path / "demo" / "recordings" / "expert-seed0-000-regular.zarr", "carracing", n=4)
    with pytest.raises(UserError, match="recorded with the carracing profile, not carracing_hood; remove"):
        run(DemoSettings(out=tmp_path / "demo", game=HOOD))
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["recordings"]
