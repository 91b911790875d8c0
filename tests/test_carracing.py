"""The embedded CarRacing game: keys → actions, shares of a step, real-time emulation, scores, the
scripted expert and its recordings."""
import math

import gymnasium as gym
import numpy as np
import pytest

from data.episode import Episode
from data.errors import UserError
from data.profiles import load_profile
from drive.carracing.game import CarRacingGame, GameSettings, RealTimeGame, TrackStats, plan_actions, summarize
from drive.carracing.expert import score_expert, wheel_angles
from drive.carracing.expert_recording import RecordSettings, frame_keys, held_seconds, record_expert


@pytest.fixture(scope="module")
def game():
    g = CarRacingGame()
    yield g
    g.close()


def wheel_target(game):
    """The steer target CarRacing's car was last given: + is left (the env steers by -action[0])."""
    return game.env.car.wheels[0].steer


def test_keys_map_to_actions():
    full = {"w": [0, 1, 0], "s": [0, 0, 0.8], "a": [-1, 0, 0], "d": [1, 0, 0]}
    for key, action in full.items():
        np.testing.assert_allclose(plan_actions({key: math.inf}, 0.0, 3), [action] * 3)
    np.testing.assert_allclose(plan_actions({"a": math.inf, "d": math.inf}, 0.0, 1), [[0, 0, 0]])
    np.testing.assert_allclose(plan_actions({}, 0.0, 2), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="unknown keys"):
        plan_actions({"x": 1.0}, 0.0, 1)
    with pytest.raises(ValueError, match=">= 0"):
        plan_actions({"w": -1.0}, 0.0, 1)


def test_keys_drive_the_car(game):
    """w moves the car forward, a turns it left (counter-clockwise), d right, s stops it."""
    turned = {}
    for steer in ("a", "d"):
        game.reset(seed=5)
        start = game.car_state()
        game.advance(1.0, {"w": math.inf})
        game.advance(0.5, {steer: math.inf})  # no gas while turning: it is a rear-wheel drive car
        state = game.car_state()
        assert state.forward_speed > 10 and state.y != start.y
        turned[steer] = state.heading - start.heading
    assert turned["a"] > 0.05 and turned["d"] < -0.05
    game.advance(3.0, {"s": math.inf})
    assert game.car_state().speed < 1.0
    assert game.env.car.wheels[0].brake == pytest.approx(0.8)


def test_press_durations_inside_a_step_become_shares_of_steering(game):
    np.testing.assert_allclose(plan_actions({"d": 0.05}, 0.0, 5)[:, 0], [1, 1, 0.5, 0, 0])
    np.testing.assert_allclose(plan_actions({"a": 0.03}, 0.02, 2)[:, 0], [-0.5, 0])  # later in the plan
    np.testing.assert_allclose(plan_actions({"w": 0.005, "s": 0.035}, 0.0, 2)[:, 1:],
                               [[0.25, 0.8], [0, 0.8 * 0.75]])
    game.reset(seed=1)
    game.advance(0.02, {"d": 0.013})
    assert wheel_target(game) == pytest.approx(-0.65)
    # one plan runs on across advances until the next press
    game.press({"a": 0.05})
    targets = []
    for _ in range(5):
        game.advance(0.02)
        targets.append(wheel_target(game))
    np.testing.assert_allclose(targets, [1, 1, 0.5, 0, 0])


def test_steering_is_a_rate_not_an_angle(game):
    """A held key turns the wheels ~0.06 rad per step up to the 0.4 rad lock; released, they return."""
    game.reset(seed=2)
    angles = []
    for _ in range(8):
        game.advance(0.02, {"a": math.inf})
        angles.append(game.car_state().wheel_angle)
    assert angles[0] == pytest.approx(0.06, abs=0.01) and angles[1] == pytest.approx(0.12, abs=0.015)
    assert max(angles) < 0.42 and angles[-1] > 0.35
    game.advance(0.2, {})
    assert abs(game.car_state().wheel_angle) < 0.02
    # the expert's model of this motor agrees with the physics
    game.reset(seed=2)
    sim = wheel_angles(0.0, +1, 0.05, 5)
    real = []
    for _ in range(5):
        game.advance(0.02, {"a": 0.05} if not real else None)
        real.append(game.car_state().wheel_angle)
    np.testing.assert_allclose(real, sim, atol=0.01)


def test_advance_counts_steps_and_carries_rounding(game):
    game.reset(seed=0)
    assert game.advance(0.1) == 5 and game.stats.steps == 5
    assert game.advance(0.009) == 0  # less than half a step: owed, not lost
    assert game.advance(0.003) == 1
    assert sum(game.advance(0.012) for _ in range(10)) == 6
    assert game.stats.steps == 12


def test_physics_step_matches_the_env_step(game):
    """Our render-free step gives the same car, tiles and reward as CarRacing.step."""
    env = gym.make("CarRacing-v3", render_mode="rgb_array", continuous=True, domain_randomize=False).unwrapped
    env.reset(seed=3)
    game.reset(seed=3)
    rng = np.random.default_rng(0)
    total = 0.0
    for i in range(200):
        action = np.array([rng.uniform(-1, 1), 0.5 * (i % 4 != 0), 0.3 * (i % 9 == 0)], dtype=np.float32)
        game._physics_step(action.astype(np.float64))
        total += env.step(action)[1]
    env.close()
    np.testing.assert_allclose(tuple(game.env.car.hull.position), tuple(env.car.hull.position), atol=1e-6)
    assert game.stats.tiles_visited == env.tile_visited_count > 10
    assert game.stats.reward == pytest.approx(total)


def test_max_steps_truncates():
    small = CarRacingGame(GameSettings(max_steps=7))
    small.reset(seed=0)
    assert small.advance(1.0, {"w": math.inf}) == 7
    assert small.truncated and small.done and small.advance(1.0) == 0
    small.close()


def test_off_track_events_and_frames(game):
    game.reset(seed=4)
    game.advance(1.0)  # past the zoom-in animation of the first second
    frame = game.frame()
    profile = load_profile("carracing")
    assert frame.shape == profile.frame_shape and frame.dtype == np.uint8
    hud = frame[profile.hud["indicators"].slices]
    assert hud.mean() < 40 < frame[:100].mean()  # the black indicator strip is where the profile says
    assert game.screen().shape == (400, 600, 3)
    assert game.on_track
    # point the car across the road and drive off it: one event, then none while on the grass
    x, y = game.track_xy[0]
    game.place_car(x, y, game.car_state().heading + math.pi / 2)
    assert game.on_track
    game.advance(2.0, {"w": math.inf})
    assert not game.on_track and game.stats.off_track_events == 1
    game.advance(1.0, {"w": math.inf})
    assert game.stats.off_track_events == 1


class FakeClock:
    def __init__(self, times):
        self.times = list(times)

    def __call__(self):
        return self.times.pop(0)


def test_real_time_advances_by_the_elapsed_time(game):
    game.reset(seed=0)
    live = RealTimeGame(game, clock=FakeClock([0.0, 0.1, 0.1, 0.34, 0.36]))
    live.capture()  # t=0: nothing has happened yet
    assert game.stats.steps == 0
    live.send({"d": math.inf})  # t=0.1: the model thought for 0.1 s → 5 steps under the old (empty) plan
    assert game.stats.steps == 5 and wheel_target(game) == 0
    live.capture()
    assert game.stats.steps == 5
    live.send({"a": math.inf})  # 0.24 s of thinking → 12 steps with d still held
    assert game.stats.steps == 17 and game.car_state().wheel_angle < -0.3
    live.capture()  # 0.02 s between sending and capturing
    assert game.stats.steps == 18 and wheel_target(game) == 1


def test_fixed_latency_is_reproducible(game):
    finals = []
    for clock in ([0.0, 0.5, 0.5, 0.9, 2.0], [0.0, 0.01, 0.02, 0.03, 0.04]):
        game.reset(seed=0)
        live = RealTimeGame(game, latency=0.06, clock=FakeClock(clock))
        live.capture()
        live.send({"w": math.inf})
        live.capture()
        assert live.send({"w": math.inf, "d": 0.03}) == 0.06
        live.capture()
        finals.append((game.stats.steps, game.car_state().x, game.car_state().y))
    assert finals[0] == finals[1] and finals[0][0] == 6
    with pytest.raises(UserError, match="--latency"):
        RealTimeGame(game, latency=0.0)


def test_expert_finishes_tracks():
    stats = score_expert([0, 1, 2, 3])
    assert all(s.tile_share >= 0.9 for s in stats), [(s.seed, s.tile_share) for s in stats]
    assert all(s.steps <= 1000 for s in stats)
    summary = summarize(stats)
    assert summary["tracks"] == 4 and summary["reward"] > 850
    assert summary["tile_share_min"] == min(s.tile_share for s in stats)


def test_summarize_values():
    stats = [TrackStats(seed=0, steps=500, reward=900.0, tiles_visited=300, tiles_total=300, wheel_travel=10.0),
             TrackStats(seed=1, steps=1000, reward=300.0, tiles_visited=150, tiles_total=300,
                        off_track_events=2, lap_finished=False)]
    stats[0].lap_finished = True
    s = summarize(stats)
    assert s["reward"] == 600 and s["reward_min"] == 300 and s["tile_share"] == 0.75
    assert s["off_track_events"] == 1 and s["laps_finished"] == 1
    assert stats[0].steer_rate == pytest.approx(1.0)  # 10 rad over 10 s
    assert summarize([]) == {}


def test_frame_keys_rules():
    hold = {"w": math.inf, "a": 0.03, "s": 0.0, "d": 0.0}
    np.testing.assert_allclose(held_seconds(hold, 0.0, 0.1), [0.1, 0.03, 0, 0])
    np.testing.assert_allclose(held_seconds(hold, 0.02, 0.05), [0.05, 0.01, 0, 0])  # later in the plan
    share = held_seconds(hold, 0.0, 0.1) / 0.1
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(frame_keys(share, "half", rng), [1, 0, 0, 0])
    np.testing.assert_array_equal(frame_keys(share, "any", rng), [1, 1, 0, 0])
    sampled = np.array([frame_keys(share, "sample", rng) for _ in range(4000)])
    assert sampled[:, 0].all() and not sampled[:, 2:].any()
    assert sampled[:, 1].mean() == pytest.approx(0.3, abs=0.03)  # pressed in the share of frames it was held


def test_recorded_expert_episode_reads_back(tmp_path, game):
    out = tmp_path / "rec"
    paths = record_expert(out, minutes=0.05, seed=7, settings=RecordSettings(stuck_share=0.0))
    assert [p.name for p in paths] == ["expert-seed7-000-regular.zarr"]
    ep = Episode(paths[0])
    assert len(ep) == 30 and ep.complete and ep.kind == "regular" and ep.pad_frames == 0
    assert ep.profile == "carracing" and ep.attrs["source"] == "expert" and ep.attrs["track_seed"] == 7
    assert ep.fps == pytest.approx(10.0)
    frames, keys, t = ep.read()
    np.testing.assert_allclose(t, np.arange(30) * 0.1)
    assert frames.shape == (30, *load_profile("carracing").frame_shape)
    np.testing.assert_array_equal(frames[0], game.reset(seed=7))  # the track's first frame, as rendered
    assert keys[:5, 0].all()  # from rest the expert holds gas
    assert not (frames[-1] == frames[0]).all()
    # a second run with the same seed is refused before anything is written
    with pytest.raises(UserError, match="--seed 7"):
        record_expert(out, minutes=0.05, seed=7)
    with pytest.raises(UserError, match="--minutes"):
        record_expert(tmp_path / "none", minutes=0, seed=1)
    assert sorted(p.name for p in out.iterdir()) == ["expert-seed7-000-regular.zarr"]
    assert not (tmp_path / "none").exists()


def test_stuck_episode_pads_then_recovers(tmp_path):
    settings = RecordSettings(stuck_share=1.0, stuck_recovered_seconds=1.0)
    paths = record_expert(tmp_path, minutes=0.5, seed=3, settings=settings)
    ep = Episode(paths[0])
    assert ep.kind == "stuck" and ep.pad_frames == 10
    keys = ep.keys[:]
    assert not keys[:10].any() and keys[10:].any()
    assert 10 + 10 <= len(ep) < 10 + 150  # ended 1 s after recovering, before the 15 s cap


def test_recording_with_latency_stores_the_keys_actually_held(tmp_path):
    """With latency = one frame, the first frame's interval still runs the empty plan: no keys."""
    eps = {}
    for latency in (0.0, 0.1):
        out = tmp_path / f"lat{latency}"
        path, = record_expert(out, minutes=0.02, seed=2, settings=RecordSettings(stuck_share=0.0, latency=latency))
        eps[latency] = Episode(path)
    assert eps[0.0].keys[0][0] == 1 and not eps[0.1].keys[0].any() and eps[0.1].keys[1][0] == 1
    assert eps[0.1].attrs["latency"] == 0.1
    speed_gap = eps[0.0].frames[11].astype(int) - eps[0.1].frames[11].astype(int)
    assert np.abs(speed_gap).sum() > 0  # the delayed start shows in the frames
    with pytest.raises(UserError, match="--latency"):
        record_expert(tmp_path / "bad", minutes=0.02, seed=2, settings=RecordSettings(latency=0.5))
    assert not (tmp_path / "bad").exists()


def test_expert_with_latency_still_drives():
    """Scored like the agent with a fixed latency, the expert predicts ahead and keeps to the road."""
    stats, = score_expert([1], latency=0.1)
    assert stats.tile_share >= 0.8 and stats.steps <= 1000


def test_pushes_move_the_car_but_the_stored_keys_are_the_experts(tmp_path, monkeypatch):
    """DART-style recovery data: a push holds a steer key the expert did not want; the episode stores
    the wanted keys (label rule "any" makes them exact), and the car ends up elsewhere."""
    from drive.carracing import expert_recording
    wanted, sent = [], []
    decide, advance = expert_recording.Expert.decide, CarRacingGame.advance
    monkeypatch.setattr(expert_recording.Expert, "decide",
                        lambda self, *a: wanted.append(decide(self, *a)) or wanted[-1])
    monkeypatch.setattr(CarRacingGame, "advance",
                        lambda self, seconds, hold=None: (sent.append(hold) if hold is not None else None,
                                                          advance(self, seconds, hold))[1])
    episodes = {}
    for every in (0.0, 0.5):
        wanted.clear(), sent.clear()
        settings = RecordSettings(stuck_share=0.0, label_rule="any", perturb_every=every)
        path, = record_expert(tmp_path / f"every{every}", minutes=0.1, seed=4, settings=settings)
        episodes[every] = Episode(path)
        stored = episodes[every].keys[:]
        expected = [frame_keys(held_seconds(h, 0.0, 0.1) / 0.1, "any", None) for h in wanted]
        np.testing.assert_array_equal(stored, expected)
        pushed = [i for i, (w, s) in enumerate(zip(wanted, sent)) if w != s]
        if every == 0.0:
            assert not pushed
        else:
            assert len(pushed) >= 5  # about one push a 0.5 s of 6 s, each 2-5 frames long
            assert all(sent[i]["a"] + sent[i]["d"] > 0 for i in pushed)
    assert episodes[0.5].attrs["perturb_every"] == 0.5
    assert not (episodes[0.0].frames[-1] == episodes[0.5].frames[-1]).all()
    with pytest.raises(UserError, match="--perturb-every"):
        record_expert(tmp_path / "bad", minutes=0.02, seed=2, settings=RecordSettings(perturb_every=-1))


def test_no_stuck_start_without_room_to_drive_after_it(tmp_path):
    """The last episode gets the frames left over: too few for a 1 s pre-roll and a recovery, it starts on the road."""
    path, = record_expert(tmp_path, minutes=0.04, seed=3, settings=RecordSettings(stuck_share=1.0))
    ep = Episode(path)
    assert ep.kind == "regular" and ep.pad_frames == 0 and len(ep) == 24
