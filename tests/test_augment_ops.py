"""An op is one unit: a label-changing op defined and registered here alone works from a profile's
[augment] table through the pixels (stage 1) to the labels of training batches (stage 2)."""
import dataclasses
from typing import Any, ClassVar

import numpy as np
import pytest

from cache.sampler import SamplerSettings, SequenceSampler
from data.augment import AugmentSpec, apply_variant, variant_keys
from data.augment_ops import OPS, STAGES, Op, register
from data.episode import Episode
from data.labels import S, W
from data.profiles import load_profile
from data.split import Segment
from tests.conftest import synthetic_cache, write_episode
from tests.test_augment import forward, road_frames


@dataclasses.dataclass(frozen=True)
class BrakeOp(Op):
    """Toy: darkens the scene by a drawn factor and makes every frame a braking one (s down, w up)."""
    dim: tuple[float, float] = (0.3, 0.6)
    NAME: ClassVar[str] = "brake"
    LIMITS: ClassVar[dict] = {"dim": (0.0, 1.0)}
    IDENTITY: ClassVar[Any] = 1.0

    def draw(self, rng):
        on, dim = self.fires(rng), rng.uniform(*self.dim)
        return float(dim) if on else 1.0

    def keys(self, keys, value, selected):
        keys[..., W] = 0
        keys[..., S] = 1
        return keys

    def pixels(self, frames, value):
        return (frames * value).astype(np.uint8)


@pytest.fixture
def brake(monkeypatch):
    monkeypatch.setitem(OPS, "brake", BrakeOp)  # registered for this test only
    return {"brake": {"brake": {"dim": [0.5, 0.5]}}, "flip": {"flip": {}}}


def test_a_label_changing_op_defined_in_a_test_changes_pixels_and_labels(brake):
    gta5 = load_profile("gta5")
    (rect,) = gta5.hud.values()
    spec = AugmentSpec.from_table(brake)
    assert AugmentSpec.from_text(spec.text()) == spec and '"brake":{"p":1.0,"dim":[0.5,0.5]}' in spec.text()
    profile = dataclasses.replace(gta5, augment=spec)
    frames, keys = road_frames(3, hud=gta5.hud), forward(3)
    out, new = apply_variant(frames, keys, "brake", profile, seed=0, episode="ep", block=0)
    np.testing.assert_array_equal(new, [[0, 0, 1, 0]] * 3)  # braking, not forward
    scene = np.ones(frames.shape[1:3], dtype=bool)
    scene[rect.slices] = False
    np.testing.assert_array_equal(out[:, scene], (frames[:, scene] * 0.5).astype(np.uint8))
    np.testing.assert_array_equal(out[:, ~scene], frames[:, ~scene])  # the minimap as recorded
    alone = variant_keys(keys, keys, "brake", seed=0, episode="ep", block=0, spec=spec.text())
    np.testing.assert_array_equal(alone, new)


def test_a_label_changing_op_reaches_the_training_batches(tmp_path, brake):
    path = tmp_path / "a.zarr"
    write_episode(path, n=60, fps=20.0, shape=(8, 8, 3), seed=1)
    cache = synthetic_cache(tmp_path, [path], variants=("clean", "brake"), augment=brake)
    sampler = SequenceSampler(cache, [Segment(path, 0, 60)], SamplerSettings(seq_len=2, stride_s=0.1, batch_size=8))
    recorded = Episode(path).keys[:]
    seen = set()
    for batch in sampler.epoch(0):
        for (_, _, label, v), got in zip(batch.ids, batch.keys.numpy()):
            want = recorded[label].copy()
            if sampler.variants[v] == "brake":
                want[[W, S]] = 0, 1
            np.testing.assert_array_equal(got, want)
            seen.add(sampler.variants[v])
    assert seen == {"clean", "brake"} and (recorded[:, W] == 1).any()


def test_every_registered_op_has_a_stage_and_draws_its_identity_when_it_does_not_fire():
    rng = np.random.default_rng(0)
    for name, cls in OPS.items():
        assert cls.NAME == name and cls.STAGE in STAGES
        assert cls(p=0.0).draw(rng) == cls.IDENTITY
    with pytest.raises(ValueError, match="stage must be one of"):
        register(type("Bad", (BrakeOp,), {"NAME": "bad", "STAGE": "later"}))
    assert "bad" not in OPS
