"""Tokens from several blocks: stage 1 stores earlier blocks beside the last (fingerprinted, reduced per
block), a head reads a choice of them side by side, and drive computes the very same features."""
import hashlib
import json

import numpy as np
import pytest
import torch

from cache.reduce import Reduction, restore_tokens
from cache.sampler import SamplerSettings, SequenceSampler
from cache.store import LAST, FeatureCache
from data.errors import UserError
from data.split import Segment
from drive.agent import load_agent
from extract_features.extractor import FeatureExtractor
from extract_features.loader import load_backbone
from extract_features.models import BACKBONES, preprocess_settings, random_model
from extract_features.pipeline import ExtractSettings, extract
from tests.test_agent import silent, write_profile_episode
from train_head.heads import HeadSettings
from train_head.optim import OptimSettings
from train_head.train import TrainSettings, train


def tiny_weights(root):
    """vit3_tiny_test with LayerScale 1 instead of the init's 1e-5, so that every block changes the tokens."""
    path = root / "tiny.pth"
    if not path.exists():
        model = random_model(BACKBONES["vit3_tiny_test"], seed=1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("gamma"):
                    p.fill_(1.0)
        torch.save(model.state_dict(), path)
    return str(path)


def extract_tiny(root, layers=(), reduction=Reduction(), name="cache"):
    recordings = root / "rec"
    if not recordings.exists():
        write_profile_episode(recordings / "ep.zarr", "gta5", n=24, noise=True)
    return extract(ExtractSettings(recordings=[recordings], cache=root / name, backbone="vit3_tiny_test", weights=tiny_weights(root),
                                   reduction=reduction, layers=layers, variants=("clean",), block_rows=16, batch_size=8, bf16=False,
                                   progress=False), log=silent)


def stored_tokens(stored: dict, layer: int) -> torch.Tensor:
    patch, scale = ("patch", "scale") if layer == LAST else (f"patch_b{layer}", f"scale_b{layer}")
    return restore_tokens({"patch": stored[patch], **({"scale": stored[scale]} if scale in stored else {})})


@pytest.mark.parametrize("reduction", [Reduction(), Reduction(dtype="int8"), Reduction(pca_dim=6, pca_frames=12)],
                         ids=["fp16", "int8", "pca"])
def test_earlier_blocks_are_stored_reduced_like_the_last(tmp_path, reduction):
    cache = extract_tiny(tmp_path, layers=(0,), reduction=reduction)
    assert cache.layers == (0,) and cache.spec["layers"] == [0]
    assert cache.fingerprint != extract_tiny(tmp_path, reduction=reduction, name="plain").fingerprint
    episode = cache.episodes()[0]
    stored = episode.read("clean", names=("patch", "scale", "patch_b0", "scale_b0"))
    assert stored["patch_b0"].shape == stored["patch"].shape == (24, 12 * 15, 6 if reduction.pca_dim else 48)
    assert ("scale_b0" in stored) == (reduction.dtype == "int8")
    # block 0's tokens, as the backbone gives them, reduced with block 0's own projection
    backbone = load_backbone("vit3_tiny_test", tiny_weights(tmp_path))
    frames = torch.from_numpy(np.asarray(episode_frames(episode)[:8]))
    block0 = FeatureExtractor(backbone, preprocess_settings(backbone.config), bf16=False, layers=(0,))(frames).layers[0]
    if reduction.pca_dim:
        assert set(cache.projections) == {LAST, 0}
        assert not torch.allclose(cache.projections[0].mean, cache.projections[LAST].mean)
        block0 = cache.projections[0](block0)
    expected = block0.half().float() if reduction.dtype == "fp16" else block0
    tol = 0.0 if reduction.dtype == "fp16" else float(block0.abs().max()) / 127
    torch.testing.assert_close(stored_tokens(stored, 0)[:8], expected, atol=tol, rtol=0)
    assert not torch.allclose(stored_tokens(stored, 0), stored_tokens(stored, LAST), atol=1e-2)


def episode_frames(episode):
    from data.episode import Episode
    return Episode(episode.recording).frames[:]


def test_a_cache_without_layers_keeps_its_fingerprint_and_reads(tmp_path):
    cache = extract_tiny(tmp_path)
    spec = dict(cache.spec)
    old = {k: v for k, v in spec.items() if k not in ("weights_label", "weights_source", "layers", "hud")}
    assert cache.fingerprint == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    cache.group.attrs["spec"] = {k: v for k, v in spec.items() if k not in ("layers", "hud")}  # as caches were written before
    reopened = FeatureCache.open(cache.path)
    assert reopened.layers == ()
    segments = [Segment(path=str(reopened.episodes()[0].recording), start=0, stop=24)]
    sampler = SequenceSampler(reopened, segments, SamplerSettings(seq_len=2, stride_s=0.1, batch_size=4))
    patch, _ = next(sampler.epoch(0)).float_tokens()
    assert patch.shape == (4, 2, 180, 48)
    with pytest.raises(UserError, match=r"--layers 0: .* stores the last block only; choose among those"):
        SequenceSampler(reopened, segments, SamplerSettings(seq_len=2, stride_s=0.1, layers=(0, LAST)))


def test_layers_are_checked_at_extraction(tmp_path):
    with pytest.raises(UserError, match=r"--layers 1: vit3_tiny_test has blocks 0..1, and the last \(1\) is always stored"):
        extract_tiny(tmp_path, layers=(1,))
    with pytest.raises(UserError, match="--layers -1"):
        extract_tiny(tmp_path, layers=(-1,))
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("reduction", [Reduction(), Reduction(pca_dim=6, pca_frames=12)], ids=["fp16", "pca"])
def test_head_reads_chosen_blocks_side_by_side_and_drive_computes_them_alike(tmp_path, reduction):
    cache = extract_tiny(tmp_path, layers=(0,), reduction=reduction)
    channels = cache.stored_channels
    s = TrainSettings(cache=cache.path, out_dir=tmp_path / "run",
                      head=HeadSettings(kind="transformer", depth=1, width=16, heads=2),
                      sampler=SamplerSettings(seq_len=2, stride_s=0.1, batch_size=4, layers=(0, LAST)),
                      optim=OptimSettings(lr=1e-3, warmup_steps=1, max_steps=2), eval_every=2, quiet=True)
    s.split = type(s.split)(val_fraction=0.0)
    train(s)
    ckpt = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert ckpt["settings"]["head"]["channels"] == 2 * channels
    assert list(ckpt["settings"]["sampler"]["layers"]) == [0, LAST]
    assert (0 in ckpt["layer_projections"]) == bool(reduction.pca_dim)

    agent = load_agent(tmp_path / "run" / "best.pt", device="cpu", log=silent)
    assert agent.extractor.layers == (0,)
    episode = cache.episodes()[0]
    stored = episode.read("clean", 0, 8, names=("patch", "patch_b0"))
    patch, _ = agent.split(agent.frame_features(episode_frames(episode)[:8])[None])
    expected = torch.cat([stored_tokens(stored, 0), stored_tokens(stored, LAST)], dim=-1)  # in --layers order
    torch.testing.assert_close(patch[0], expected, atol=0, rtol=0)
    live = agent.features_fn(agent.preprocess_fn(episode_frames(episode)[3])[None])
    torch.testing.assert_close(agent.split(live[:, None])[0][0, 0], expected[3], atol=2e-3, rtol=2e-3)
    assert agent.head_fn(live[None].expand(1, 2, -1)).shape == (1, 4)


def test_cli_layer_choices_parse():
    from extract_features.__main__ import parse_layers as extract_layers
    from train_head.__main__ import parse_layers as head_layers

    assert extract_layers("5,8") == (5, 8)
    assert head_layers("5,8,last") == (5, 8, LAST) and head_layers("last") == (LAST,)
    with pytest.raises(UserError, match="--layers 'x': expected block numbers"):
        extract_layers("x")
    with pytest.raises(UserError, match="--layers 'first': expected 'last' and/or stored block numbers"):
        head_layers("first")
