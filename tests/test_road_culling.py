"""drive.carracing.road_culling: the culled road drawing gives CarRacing's own render to the pixel, on several
tracks, in the zoom-in and later, turning, with visited tiles recoloured; and it draws fewer polygons."""
import numpy as np

from drive.carracing.game import CarRacingGame, GameSettings
from drive.carracing.road_culling import grass_squares, near_screen


def stock_render(env) -> np.ndarray:
    culled = env.__dict__.pop("_render_road")  # the class's own method again
    try:
        return env.render()
    finally:
        env._render_road = culled


def test_renders_are_the_envs_own_on_every_track():
    game = CarRacingGame(GameSettings())  # one game, several tracks: each reset brings a new road
    for seed in (0, 7, 1003):
        game.reset(seed)
        rng = np.random.default_rng(seed)
        checked = 0
        for i in range(12):
            if i:
                game.advance(float(rng.uniform(0.1, 0.6)),
                             {"w": 0.1, "a": float(rng.uniform(0, 0.1)) if i % 2 else 0.0,
                              "d": float(rng.uniform(0, 0.1)) if i % 3 == 0 else 0.0})
            if game.done:
                break
            np.testing.assert_array_equal(game.env.render(), stock_render(game.env))
            checked += 1
        assert checked >= 6 and game.stats.tiles_visited > 0  # past the zoom-in, tiles recoloured


def test_only_polygons_near_the_screen_are_kept():
    corners = np.array([[(0, 0), (1, 0), (1, 1), (0, 1)], [(1e4, 1e4), (1e4 + 1, 1e4), (1e4 + 1, 1e4 + 1), (1e4, 1e4 + 1)]],
                       dtype=np.float64)
    assert near_screen(corners, zoom=1.0, translation=(500, 400), angle=0.3).tolist() == [True, False]
    squares = np.array(grass_squares())
    assert squares.shape == (400, 4, 2)
    kept = near_screen(squares, zoom=16.2, translation=(500, 200), angle=1.0)  # the env's zoom once in
    assert 0 < kept.sum() < 100
