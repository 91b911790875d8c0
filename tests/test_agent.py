"""drive.agent: a checkpoint's features and head in the live loop equal what stage 1 cached and stage 2 trained on."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from cache.reduce import Reduction, restore_tokens
from cache.sampler import SamplerSettings
from data.episode import Episode, EpisodeMeta, EpisodeWriter
from data.errors import UserError
from data.profiles import load_profile
from drive.agent import load_agent
from extract_features.models import BACKBONES, random_model
from extract_features.pipeline import ExtractSettings, extract
from tests.conftest import synthetic_frames, synthetic_keys
from train_head.checkpoint import save_checkpoint
from train_head.heads import HeadSettings, build_head
from train_head.contract import ControllerSettings
from train_head.train import TrainSettings, drive_contract


def silent(*args):
    pass


def write_profile_episode(path: Path, profile: str, n: int = 24, fps: float = 10.0, seed: int = 0, pad_frames: int = 0,
                          noise: bool = False):
    """An episode of n synthetic frames at the profile's stored size, recorded with that profile.
    noise: every frame fresh random pixels (features then differ clearly from frame to frame)."""
    shape = load_profile(profile).frame_shape
    frames, keys = synthetic_frames(n, shape, seed), synthetic_keys(n, seed)
    if noise:
        frames = np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    with EpisodeWriter(path, shape, EpisodeMeta(fps=fps, profile=profile, pad_frames=pad_frames)) as w:
        w.append(frames, keys, np.arange(n) / fps)
    return frames, keys


def make_checkpoint(root: Path, profile: str = "carracing", reduction: Reduction = Reduction(), tokens: str = "patches",
                    stride_s: float = 0.2, label_shift_s: float = 0.0, n: int = 24, seed: int = 0,
                    bf16: bool = False, int8: bool = False) -> tuple[Path, Path]:
    """A feature cache of one synthetic episode (vit_tiny_test, random weights) and an untrained head
    checkpoint holding exactly the settings train_head stores. Returns (checkpoint, cache)."""
    recordings, cache_dir = root / "rec", root / "cache"
    write_profile_episode(recordings / "ep.zarr", profile, n=n, seed=seed)
    cache = extract(ExtractSettings(recordings=[recordings], cache=cache_dir, backbone="vit_tiny_test", weights="random",
                                    reduction=reduction, variants=("clean",), block_rows=16, batch_size=8,
                                    bf16=bf16, int8_backbone=int8, progress=False), log=silent)
    head_settings = HeadSettings(grid=cache.grid, channels=cache.stored_channels, cls_channels=int(cache.spec["channels"]),
                                 seq_len=3, tokens=tokens, hidden=16, mlp_hidden=16)
    torch.manual_seed(seed)
    head = build_head(head_settings)
    train = TrainSettings(cache=cache_dir, out_dir=root / "run", head=head_settings,
                          sampler=SamplerSettings(seq_len=3, stride_s=stride_s, label_shift_s=label_shift_s, tokens=tokens))
    ckpt = save_checkpoint(root / "run" / "best.pt", head.state_dict(), fingerprint=cache.fingerprint, step=0,
                           metrics={}, **drive_contract(train, cache, head_settings).checkpoint_entries())
    return ckpt, cache_dir


@pytest.mark.parametrize("reduction", [Reduction(), Reduction(dtype="int8"), Reduction(pca_dim=8, pca_frames=12)],
                         ids=["fp16", "int8", "pca+fp16"])
def test_features_equal_the_cached_tokens(reduction, tmp_path):
    from cache.store import FeatureCache

    ckpt, cache_dir = make_checkpoint(tmp_path, profile="gta5", reduction=reduction, tokens="both")
    agent = load_agent(ckpt, device="cpu", log=silent)
    episode = FeatureCache.open(cache_dir).episodes()[0]
    stored = episode.read("clean")
    cached_patch = restore_tokens({k: stored[k] for k in ("patch", "scale") if k in stored}).numpy()
    cached_cls = stored["cls"].astype(np.float32)
    frames = Episode(episode.recording).frames[:]

    # the live loop's way: one frame at a time through preprocess_fn and features_fn
    for row in (0, 7, 23):
        live = agent.features_fn(agent.preprocess_fn(frames[row])[None])
        patch, cls = agent.split(live[:, None])
        np.testing.assert_allclose(patch[0, 0].numpy(), cached_patch[row], rtol=2e-3, atol=2e-3 * np.abs(cached_patch).max())
        np.testing.assert_allclose(cls[0, 0].numpy(), cached_cls[row], rtol=2e-3, atol=1e-3)
    # replay's way: batches of frames, as stage 1 ran them (batch 8): the very same numbers
    patch, cls = agent.split(agent.frame_features(frames[:8])[None])
    np.testing.assert_array_equal(patch[0].numpy(), cached_patch[:8])
    np.testing.assert_array_equal(cls[0].numpy(), cached_cls[:8])
    assert patch.shape[-1] == (8 if reduction.pca_dim else 48)
    if reduction.dtype == "fp16":  # the reduction was applied, not skipped: values sit on the fp16 grid
        assert np.array_equal(patch.numpy(), patch.numpy().astype(np.float16).astype(np.float32))


def test_head_fn_sees_what_training_fed_the_head(tmp_path):
    from cache.store import FeatureCache

    ckpt, cache_dir = make_checkpoint(tmp_path, profile="gta5", reduction=Reduction(dtype="int8"), tokens="both")
    agent = load_agent(ckpt, device="cpu", log=silent)
    episode = FeatureCache.open(cache_dir).episodes()[0]
    stored = episode.read("clean", 4, 7)
    patch = restore_tokens({k: stored[k] for k in ("patch", "scale")})[None]
    cls = torch.from_numpy(stored["cls"]).float()[None]
    head = build_head(HeadSettings(**torch.load(ckpt, weights_only=True)["settings"]["head"]))
    head.load_state_dict(torch.load(ckpt, weights_only=True)["model"])
    with torch.no_grad():
        expected = head.eval()(patch, cls)
    features = agent.frame_features(Episode(episode.recording).frames[4:7])
    torch.testing.assert_close(agent.head_fn(features[None]), expected, rtol=1e-5, atol=1e-5)


def test_other_backbone_weights_are_refused(tmp_path):
    ckpt, _ = make_checkpoint(tmp_path)
    other = tmp_path / "other.pth"
    torch.save(random_model(BACKBONES["vit_tiny_test"], seed=1).state_dict(), other)
    with pytest.raises(UserError, match=r"best\.pt: its features came from vit_tiny_test weights .* pass the --weights"):
        load_agent(ckpt, weights=str(other), device="cpu", log=silent)
    same = tmp_path / "same.pth"
    torch.save(random_model(BACKBONES["vit_tiny_test"], seed=0).state_dict(), same)
    assert load_agent(ckpt, weights=str(same), device="cpu", log=silent).extractor.backbone.name == "vit_tiny_test"


def test_controller_defaults_come_from_the_checkpoint(tmp_path):
    ckpt, _ = make_checkpoint(tmp_path)
    payload = torch.load(ckpt, weights_only=True)
    stored = ControllerSettings(max_steer=0.7, steer_gain=1.4, gas_threshold=0.4, brake_threshold=0.6)
    payload["settings"]["controller"] = dataclasses.asdict(stored)  # as train_head stores them
    torch.save(payload, ckpt)
    agent = load_agent(ckpt, device="cpu", log=silent)
    c = agent.controller()
    assert (c.max_steer, c.steer_gain, c.gas_threshold, c.brake_threshold) == (0.7, 1.4, 0.4, 0.6)
    tuned = agent.controller(max_steer=0.3, gas_threshold=None, proportional=False)
    assert (tuned.max_steer, tuned.gas_threshold, tuned.proportional) == (0.3, 0.4, False)
    assert (agent.seq_len, agent.stride_s, agent.profile.name) == (3, 0.2, "carracing")
    with pytest.raises(ValueError, match="trained on"):
        agent.preprocess_fn(np.zeros((180, 240, 3), np.uint8))  # a gta5-sized frame


def test_format_1_checkpoint_is_converted_on_load(tmp_path):
    """A checkpoint from before the typed contract: an untyped dict with the timing beside the sampler, a
    controller of five fields, no precision and no layers. It loads and drives like the new layout."""
    ckpt, _ = make_checkpoint(tmp_path, stride_s=0.3, label_shift_s=0.1)
    new = load_agent(ckpt, device="cpu", log=silent)
    payload = torch.load(ckpt, weights_only=True)
    s = payload["settings"]
    payload["format_version"] = 1
    s.pop("precision")
    s["sampler"].pop("layers")
    s["controller"] = {"max_steer": 0.7, "steer_gain": 1.4, "gas_threshold": 0.4, "brake_threshold": 0.6,
                       "proportional_gas": True}
    s.update(seq_len=3, stride_s=0.3, label_shift_s=0.1)
    del payload["layer_projections"]
    old_path = tmp_path / "old.pt"
    torch.save(payload, old_path)
    old = load_agent(old_path, device="cpu", log=silent)
    assert (old.seq_len, old.stride_s, old.contract.label_shift_s, old.contract.layers) == (3, 0.3, 0.1, (-1,))
    assert old.contract.precision == "fp32" and old.contract.preprocess == new.contract.preprocess
    c = old.controller()
    assert (c.max_steer, c.steer_gain, c.proportional_gas, c.steer_threshold) == (0.7, 1.4, True, 0.5)
    frame = synthetic_frames(1, shape=old.profile.frame_shape)[0]
    np.testing.assert_array_equal(old.step(frame, 0.0), new.step(frame, 0.0))


def test_step_runs_the_ring_and_head_like_the_manual_path(tmp_path):
    """Agent.step: one frame at a time, sequences picked by time (stride 0.2 s at 10 fps: frames i-4, i-2, i)."""
    ckpt, _ = make_checkpoint(tmp_path, stride_s=0.2)
    agent = load_agent(ckpt, device="cpu", log=silent)
    frames = synthetic_frames(7, shape=agent.profile.frame_shape)
    feats = torch.cat([agent.features_fn(agent.preprocess_fn(f)[None]) for f in frames])
    probs = [agent.step(f, i / 10) for i, f in enumerate(frames)]
    expected = torch.sigmoid(agent.head_fn(feats[[2, 4, 6]][None])).reshape(-1).numpy()
    np.testing.assert_allclose(probs[6], expected, atol=1e-6)
    agent.reset()  # forgets the history: the first frame after a reset fills every slot
    first = agent.step(frames[6], 1.0)
    np.testing.assert_allclose(first, torch.sigmoid(agent.head_fn(feats[[6, 6, 6]][None])).reshape(-1).numpy(), atol=1e-6)


def test_missing_checkpoint_is_one_line(tmp_path):
    with pytest.raises(UserError, match="no such checkpoint"):
        load_agent(tmp_path / "nope.pt", device="cpu", log=silent)
