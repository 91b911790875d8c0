import dataclasses
import hashlib

import cv2
import numpy as np
import pytest

from data.augment import AugmentSpec, Draw, Variant, apply_keys, apply_variant, draw_params, variant_keys
from data.augment_ops import WarpOp, warp_rows
from data.episode import EpisodeMeta, EpisodeWriter
from data.errors import UserError
from data.profiles import PROFILE_DIR, load_profile
from tools.augment_view import write_augment_grid

MINIMAP_RGB = (255, 0, 255)  # a colour the scene never has, to find leaks of the minimap


def road_frames(n: int, shape=(180, 240, 3), hud=None, seed: int = 0) -> np.ndarray:
    """Sky, grass, a road with moving lane marks, and a magenta minimap with a route in the HUD rectangle."""
    h, w, _ = shape
    rng = np.random.default_rng(seed)
    frames = np.empty((n, h, w, 3), dtype=np.uint8)
    horizon = int(h * 0.4)
    for i in range(n):
        f = frames[i]
        f[:horizon] = np.linspace((90, 140, 230), (200, 220, 245), horizon).astype(np.uint8)[:, None]
        f[horizon:] = (60, 130, 50)
        road = np.array([[w // 2 - 8, horizon], [w // 2 + 8, horizon], [w - 10, h], [10, h]], np.int32)
        cv2.fillPoly(f, [road], (90, 90, 95))
        for k in range(6):  # dashes moving towards the camera
            y = horizon + ((k * 20 + i * 6) % (h - horizon))
            cv2.line(f, (w // 2, y), (w // 2, min(y + 8, h - 1)), (240, 240, 240), 2)
        f[horizon:] = np.clip(f[horizon:].astype(int) + rng.integers(-6, 7, f[horizon:].shape), 0, 255)
        for r in (hud or {}).values():
            f[r.slices] = MINIMAP_RGB
            cv2.line(f[r.slices], (2, r.y1 - r.y0 - 3), (r.x1 - r.x0 - 3, 4), (120, 40, 200), 3)  # the route
    return frames


@pytest.fixture(scope="module")
def gta5():
    return load_profile("gta5")


def every_op_spec() -> AugmentSpec:
    """Each op alone and all together, each firing for sure."""
    return AugmentSpec.from_table({
        "flip": {"flip": {}}, "warp": {"warp": {}}, "zoom": {"zoom": {}}, "color": {"color": {}},
        "sky": {"sky": {}}, "all": {"flip": {}, "warp": {}, "zoom": {}, "color": {}, "sky": {}},
    })


def forward(n: int) -> np.ndarray:
    keys = np.zeros((n, 4), dtype=np.uint8)
    keys[:, 0] = 1
    return keys


def test_hud_survives_every_variant(gta5):
    (rect,) = gta5.hud.values()
    frames = road_frames(4, hud=gta5.hud)
    profile = dataclasses.replace(gta5, augment=every_op_spec())
    for variant in profile.augment.variants:
        for block in range(3):
            out, _ = apply_variant(frames, forward(4), variant, profile, seed=1, episode="ep", block=block)
            assert out.shape == frames.shape and out.dtype == np.uint8
            expected = frames[:, rect.y0:rect.y1, rect.x0:rect.x1]
            if variant.op("flip") is not None:
                expected = expected[:, :, ::-1]
            np.testing.assert_array_equal(out[:, rect.y0:rect.y1, rect.x0:rect.x1], expected)
            if variant.name != "clean":
                assert (out != frames).any(), variant.name


def test_geometric_variants_do_not_smear_the_minimap_into_the_scene(gta5):
    (rect,) = gta5.hud.values()
    frames = road_frames(2, hud=gta5.hud)
    profile = dataclasses.replace(gta5, augment=every_op_spec())
    outside = np.ones(frames.shape[1:3], dtype=bool)
    outside[rect.slices] = False
    for name in ("flip", "warp", "zoom"):
        out, _ = apply_variant(frames, forward(2), name, profile, seed=0, episode="ep", block=0)
        magenta = (out[..., 0] > 200) & (out[..., 1] < 60) & (out[..., 2] > 200)
        assert not (magenta & outside).any(), name
        assert magenta[:, rect.y0:rect.y1, rect.x0:rect.x1].mean() > 0.5


def test_flip_twice_is_identity(gta5):
    for profile, shape in ((gta5, (180, 240, 3)), (load_profile("carracing"), load_profile("carracing").frame_shape)):
        frames = road_frames(3, shape=shape, hud=profile.hud)
        keys = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 1]], dtype=np.uint8)
        once, keys1 = apply_variant(frames, keys, "flip", profile, seed=0, episode="ep", block=0)
        np.testing.assert_array_equal(keys1, [[1, 0, 0, 1], [0, 1, 1, 0], [1, 1, 0, 0]])
        twice, keys2 = apply_variant(once, keys1, "flip", profile, seed=0, episode="ep", block=0)
        assert not np.array_equal(once, frames)
        np.testing.assert_array_equal(twice, frames)
        np.testing.assert_array_equal(keys2, keys)


def test_same_draw_same_bytes_other_block_other_parameters(gta5):
    frames, keys = road_frames(3, hud=gta5.hud), forward(3)
    for variant in (gta5.augment.variant("warp"), gta5.augment.variant("jitter")):
        a, ka = apply_variant(frames, keys, variant, gta5, seed=7, episode="ep-1", block=4)
        b, kb = apply_variant(frames.copy(), keys.copy(), variant, gta5, seed=7, episode="ep-1", block=4)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ka, kb)
        draws = {draw_params(variant, seed=7, episode="ep-1", block=k) for k in range(4)}
        assert len(draws) == 4, variant.name  # blocks differ
        assert draw_params(variant, seed=7, episode="ep-2", block=4) != draw_params(variant, seed=7, episode="ep-1",
                                                                                     block=4)
        assert draw_params(variant, seed=8, episode="ep-1", block=4) != draw_params(variant, seed=7, episode="ep-1",
                                                                                     block=4)


def test_every_frame_of_a_call_gets_the_same_transform(gta5):
    frame = road_frames(1, hud=gta5.hud)
    frames = np.repeat(frame, 4, axis=0)
    for variant in gta5.augment.variants:
        out, _ = apply_variant(frames, forward(4), variant, gta5, seed=3, episode="ep", block=2)
        for i in range(1, 4):
            np.testing.assert_array_equal(out[i], out[0])


def _find_block(variant, want) -> int:
    return next(b for b in range(100) if want(draw_params(variant, seed=0, episode="ep", block=b)))


def test_warp_labels_follow_the_seed_rule(gta5):
    variant = gta5.augment.variant("warp")
    keys = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]], np.uint8)
    frames = road_frames(len(keys), hud=gta5.hud)
    frames[:] = frames[0]
    for want, steer in ((lambda d: d.get("warp") < 0, 1), (lambda d: d.get("warp") > 0, 3)):
        block = _find_block(variant, want)
        out, new = apply_variant(frames, keys, variant, gta5, seed=0, episode="ep", block=block)
        expected = keys.copy()
        expected[[0, 1, 5], steer] = 1  # w alone or nothing: corrective steer added
        np.testing.assert_array_equal(new, expected)
        np.testing.assert_array_equal(out[[2, 3, 4]], frames[[2, 3, 4]])  # other labels: not warped
        assert (out[[0, 1, 5]] != frames[[0, 1, 5]]).any(axis=(1, 2, 3)).all()


def test_warp_direction_matches_the_steer():
    """A vertical line: a left warp (steer a) moves it left at the bottom and right at the top."""
    h, w = 180, 240
    frame = np.zeros((1, h, w, 3), dtype=np.uint8)
    frame[:, :, 119:121] = 255
    profile = dataclasses.replace(load_profile("gta5"), hud={})
    variant = Variant("warp", (WarpOp(shift=(0.3, 0.3)),))
    for want, steer in ((lambda d: d.get("warp") < 0, "a"), (lambda d: d.get("warp") > 0, "d")):
        block = _find_block(variant, want)
        out, keys = apply_variant(frame, forward(1), variant, profile, seed=0, episode="ep", block=block)
        bottom, top = (float(np.mean(np.flatnonzero(out[0, y, :, 0] > 127))) for y in (h - 10, 10))
        assert keys[0, 1 if steer == "a" else 3] == 1
        assert (bottom < 119 < 121 < top) if steer == "a" else (top < 119 < 121 < bottom)


def test_colour_and_sky_leave_geometry_and_hud_alone(gta5):
    (rect,) = gta5.hud.values()
    frames = road_frames(2, hud=gta5.hud)
    spec = AugmentSpec.from_table({"sky": {"sky": {"fraction": 0.35}}, "dark": {"color": {"brightness": 0.5}}})
    profile = dataclasses.replace(gta5, augment=spec)
    sky, _ = apply_variant(frames, forward(2), "sky", profile, seed=0, episode="ep", block=0)
    rows = round(0.35 * 180)
    assert (sky[:, :rows] == 0).all()
    np.testing.assert_array_equal(sky[:, rows:], frames[:, rows:])
    dark, _ = apply_variant(frames, forward(2), "dark", profile, seed=0, episode="ep", block=0)
    scene = np.ones(frames.shape[1:3], dtype=bool)
    scene[rect.slices] = False
    assert dark[:, scene].mean() < 0.8 * frames[:, scene].mean()
    np.testing.assert_array_equal(dark[:, rect.y0:rect.y1, rect.x0:rect.x1], frames[:, rect.y0:rect.y1, rect.x0:rect.x1])


def test_variant_keys_agree_with_apply_variant(gta5):
    spec = AugmentSpec.from_table({"flip_warp": {"flip": {}, "warp": {}}, "warp": {"warp": {"p": 0.5}}})
    profile = dataclasses.replace(gta5, augment=spec)
    keys = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1], [0, 1, 0, 0]], dtype=np.uint8)
    frames = road_frames(len(keys), hud=gta5.hud)
    for name in spec.names:
        for block in range(6):
            _, new = apply_variant(frames, keys, name, profile, seed=2, episode="e", block=block)
            alone = [variant_keys(keys[i], keys[i], name, seed=2, episode="e", block=block, spec=spec.text())
                     for i in range(len(keys))]
            np.testing.assert_array_equal(np.stack(alone), new)


def test_apply_keys_adds_steer_to_a_shifted_label():
    label = np.array([1, 0, 0, 1], dtype=np.uint8)
    warped, not_warped = np.array([1, 0, 0, 0]), np.array([1, 0, 1, 0])  # the transformed frame's keys
    assert warp_rows(warped) and not warp_rows(not_warped)
    np.testing.assert_array_equal(apply_keys(label, Draw.of(warp=-0.3), warped), [1, 1, 0, 1])
    np.testing.assert_array_equal(apply_keys(label, Draw.of(warp=-0.3, flip=True), warped), [1, 1, 0, 1])
    np.testing.assert_array_equal(apply_keys(label, Draw.of(warp=0.3, flip=True), not_warped), [1, 1, 0, 0])


def test_spec_text_is_stable_and_round_trips(gta5):
    again = load_profile("gta5").augment
    assert gta5.augment.names[0] == "clean" and gta5.augment.text() == again.text()
    assert AugmentSpec.from_text(gta5.augment.text()) == gta5.augment
    changed = AugmentSpec.from_table({"warp": {"warp": {"shift": [0.2, 0.4]}}})
    assert changed.text() != AugmentSpec.from_table({"warp": {"warp": {"shift": [0.2, 0.42]}}}).text()
    assert gta5.augment.subset(["warp", "clean"]).names == ("clean", "warp")


@pytest.mark.parametrize("table, words", [
    ("[augment.bad]\nwrap = { p = 1.0 }", "augment.bad: unknown op 'wrap'"),
    ("[augment.bad]\nwarp = { shift = [0.4, 0.1] }", "augment.bad.warp.shift must be [low, high]"),
    ("[augment.bad]\nflip = { p = 2 }", "augment.bad.flip.p must be a probability"),
    ("[augment.clean]\nflip = { p = 1.0 }", "augment.clean is the unaugmented frame"),
])
def test_bad_augment_table_is_one_line_user_error(tmp_path, table, words):
    base = (PROFILE_DIR / "gta5.toml").read_text().split("[augment")[0]
    path = tmp_path / "bad.toml"
    path.write_text(base + table + "\n")
    with pytest.raises(UserError) as e:
        load_profile(path)
    assert words in str(e.value) and "\n" not in str(e.value) and str(path) in str(e.value)


def test_unknown_variant_name_is_a_user_error(gta5):
    with pytest.raises(UserError, match="no augmentation variant 'fog'.*clean, flip, warp, jitter"):
        apply_variant(road_frames(1), forward(1), "fog", gta5, seed=0, episode="e", block=0)


def _episode(path, frames, keys, fps=20.0):
    with EpisodeWriter(path, frames.shape[1:], EpisodeMeta(fps=fps, profile="gta5")) as w:
        w.append(frames, keys, np.arange(len(frames)) / fps)


def test_augment_grid_has_a_row_per_variant(tmp_path, gta5):
    n = 30
    keys = forward(n)
    keys[:10, 1] = 1
    _episode(tmp_path / "ep.zarr", road_frames(n, hud=gta5.hud), keys)
    out = write_augment_grid(tmp_path / "ep.zarr", gta5, tmp_path / "grid.png", length=3)
    img = cv2.imread(str(out))
    tile_h, tile_w = 2 * 180 + 40, 2 * 240 + 2
    assert img.shape == (len(gta5.augment.variants) * tile_h, 3 * tile_w, 3)
    # the flip row's first frame is the episode frame mirrored, minimap flipped in place
    start = 9  # starts 0..19 (3 frames, 0.25 s = 5 frames apart); all end on w alone; 9 is the middle
    frame = road_frames(n, hud=gta5.hud)[start]
    flipped, _ = apply_variant(frame[None], keys[start][None], "flip", gta5, seed=0, episode="ep.zarr", block=0)
    tile = cv2.cvtColor(img[tile_h + 20:tile_h + 20 + 360:2, 0:480:2], cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(tile, flipped[0])


def test_augment_grid_refuses_bad_input_without_output(tmp_path, gta5):
    _episode(tmp_path / "ep.zarr", road_frames(8, shape=load_profile("carracing").frame_shape), forward(8))
    with pytest.raises(UserError, match="pass the right --game"):
        write_augment_grid(tmp_path / "ep.zarr", gta5, tmp_path / "grid.png")
    with pytest.raises(UserError, match="too few"):
        write_augment_grid(tmp_path / "ep.zarr", load_profile("carracing"), tmp_path / "grid.png", length=3,
                           stride_frames=5)
    assert list(tmp_path.glob("*.png")) == [] and list(tmp_path.glob(".*.png")) == []


PINNED_PIXELS_AND_KEYS = "de2eb557cb7bd9bb"  # sha256 computed before data/augment.py was split into one unit per op


def test_fixed_seed_variants_are_pinned(gta5):
    """Every op alone and together, and the profile's variants, over several blocks: the same bytes and labels
    as before the ops became units (a refactor must not move them)."""
    keys = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.uint8)
    frames = road_frames(len(keys), hud=gta5.hud)
    digest = hashlib.sha256()
    for spec in (every_op_spec(), gta5.augment, AugmentSpec.from_table({"half": {"flip": {"p": 0.5}, "warp": {"p": 0.5},
                                                                                 "color": {"p": 0.5}}})):
        profile = dataclasses.replace(gta5, augment=spec)
        for variant in spec.variants:
            for block in range(4):
                out, new = apply_variant(frames, keys, variant, profile, seed=5, episode="ep", block=block)
                label = variant_keys(keys[::-1], keys, variant.name, seed=5, episode="ep", block=block, spec=spec.text())
                digest.update(variant.name.encode() + out.tobytes() + new.tobytes() + label.tobytes())
    assert digest.hexdigest()[:16] == PINNED_PIXELS_AND_KEYS
