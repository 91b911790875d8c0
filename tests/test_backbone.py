"""The DINOv2 backbone against an independent implementation (transformers), and the shared preprocessing."""
import dataclasses
import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data.errors import UserError
from extract_features.extractor import FeatureExtractor
from extract_features.loader import Backbone
from extract_features.models import BACKBONES, DinoV2, ViTConfig, random_model
from tools.bench.backbone import main
from extract_features.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessSettings, patch_grid, preprocess
from extract_features.weights import hf_to_official, weights_digest
from tests.conftest import synthetic_frames

SIZES = [(224, 224), (182, 252)]
TOL = 1e-4


def hf_model(config: ViTConfig, seed: int = 0):
    """transformers' Dinov2Model / Dinov2WithRegistersModel of the same geometry, every tensor randomised."""
    transformers = pytest.importorskip("transformers")
    kw = dict(hidden_size=config.embed_dim, num_hidden_layers=config.depth, num_attention_heads=config.num_heads,
              image_size=config.img_size, patch_size=config.patch_size, use_swiglu_ffn=config.ffn == "swiglu",
              attn_implementation="eager")
    if config.num_registers:
        model = transformers.Dinov2WithRegistersModel(
            transformers.Dinov2WithRegistersConfig(num_register_tokens=config.num_registers, **kw))
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(**kw))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # biases and norms away from 0 and 1, tokens large: a wrong mapping shows
        for name, p in model.named_parameters():
            scale = 0.5 if name.startswith("embeddings.") and "projection" not in name else 0.02
            p.add_(torch.randn(p.shape, generator=gen) * scale)
            if "lambda1" in name:
                p.uniform_(0.1, 1.0, generator=gen)
    return model.eval()


def ours_from_hf(hf, config: ViTConfig) -> DinoV2:
    model = DinoV2(config).eval()
    model.load_state_dict(hf_to_official(hf.state_dict()), strict=True)
    return model


def assert_same_tokens(hf, ours: DinoV2, x: torch.Tensor, release_interpolation=None):
    with torch.no_grad():
        ref = hf(pixel_values=x).last_hidden_state
        out = ours(x)
    r = ours.config.num_registers
    rows, cols = x.shape[-2] // 14, x.shape[-1] // 14
    assert out.patch.shape == (len(x), rows * cols, ours.config.embed_dim)
    assert out.registers.shape == (len(x), r, ours.config.embed_dim)
    assert (out.cls - ref[:, 0]).abs().max() <= TOL
    assert (out.patch - ref[:, 1 + r:]).abs().max() <= TOL
    if r:
        assert (out.registers - ref[:, 1:1 + r]).abs().max() <= TOL


def hf_interpolation(config: ViTConfig) -> ViTConfig:
    """transformers >= 4.45 resizes pos_embed to the exact grid, without the release's 0.1 offset."""
    return dataclasses.replace(config, interpolate_offset=0.0)


TINY = {
    "mlp": BACKBONES["vit_tiny_test"],
    "registers": BACKBONES["vit_tiny_test_reg"],
    "swiglu": ViTConfig(48, 2, 3, ffn="swiglu", img_size=224),
    "swiglu_registers": ViTConfig(48, 2, 3, ffn="swiglu", num_registers=4, img_size=224,
                                  interpolate_offset=0.0, interpolate_antialias=True),
    "release_grid": ViTConfig(48, 2, 3),  # 37x37 positions interpolated to every input
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("kind", list(TINY))
def test_tiny_configs_equal_transformers(kind, size):
    config = hf_interpolation(TINY[kind])
    hf = hf_model(config, seed=1)
    assert_same_tokens(hf, ours_from_hf(hf, config), torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(2)))


@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov2_vits14_reg"] + [
    pytest.param(n, marks=pytest.mark.slow) for n in ("dinov2_vitb14", "dinov2_vitb14_reg", "dinov2_vitl14", "dinov2_vitl14_reg")])
def test_release_geometry_equals_transformers(name):
    config = hf_interpolation(BACKBONES[name])
    hf = hf_model(config)
    ours = ours_from_hf(hf, config)
    for size in SIZES:
        assert_same_tokens(hf, ours, torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(3)))


def release_interpolate(pos_embed, h, w, offset, antialias, patch_size=14):
    """interpolate_pos_encoding of facebookresearch/dinov2 models/vision_transformer.py (the hub code),
    transcribed with its own names: it calls the input height `w` and the width `h`."""
    npatch_side = int(math.sqrt(pos_embed.shape[1] - 1))
    dim = pos_embed.shape[-1]
    w0, h0 = h // patch_size, w // patch_size
    kwargs = {}
    if offset:
        kwargs["scale_factor"] = (float(w0 + offset) / npatch_side, float(h0 + offset) / npatch_side)
    else:
        kwargs["size"] = (w0, h0)
    patch_pos_embed = F.interpolate(
        pos_embed[:, 1:].float().reshape(1, npatch_side, npatch_side, dim).permute(0, 3, 1, 2),
        mode="bicubic", antialias=antialias, **kwargs)
    assert (w0, h0) == patch_pos_embed.shape[-2:]
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((pos_embed[:, :1], patch_pos_embed), dim=1)


# facebookresearch/dinov2 hub/backbones.py: plain models offset 0.1, no antialias; _reg models 0.0 and antialias
@pytest.mark.parametrize("name,offset,antialias", [("dinov2_vits14", 0.1, False), ("dinov2_vits14_reg", 0.0, True)])
def test_position_embeddings_interpolate_like_the_release(name, offset, antialias):
    config = BACKBONES[name]
    with torch.no_grad():
        model = random_model(config, seed=4)
        model.pos_embed.normal_()  # the release's init is too smooth to tell interpolations apart
        for h, w in [(182, 252), (168, 252), (224, 224)]:
            ours = model.interpolate_pos_embed(h // 14, w // 14)
            ref = release_interpolate(model.pos_embed, h, w, offset, antialias)
            assert ours.shape == (1, 1 + (h // 14) * (w // 14), config.embed_dim)
            assert torch.allclose(ours, ref, atol=1e-6, rtol=0)
        assert model.interpolate_pos_embed(37, 37) is model.pos_embed  # the native grid is used as is
        if offset:  # the offset is not a no-op: exact-size resizing gives other values
            exact = dataclasses.replace(config, interpolate_offset=0.0)
            other = DinoV2(exact)
            other.load_state_dict(model.state_dict())
            assert (other.interpolate_pos_embed(13, 18) - model.interpolate_pos_embed(13, 18)).abs().max() > 1e-2


def test_release_interpolation_end_to_end_equals_transformers_with_release_interpolation():
    """dinov2_vits14 exactly as released (0.1 offset) against transformers given the release's formula."""
    config = BACKBONES["dinov2_vits14"]
    hf = hf_model(config, seed=5)
    ours = ours_from_hf(hf, config)
    hf.embeddings.interpolate_pos_encoding = lambda embeddings, h, w: release_interpolate(
        hf.embeddings.position_embeddings, h, w, 0.1, False)
    assert_same_tokens(hf, ours, torch.randn(2, 3, 182, 252, generator=torch.Generator().manual_seed(6)))


def test_earlier_block_output_equals_transformers_hidden_state():
    config = hf_interpolation(dataclasses.replace(BACKBONES["vit_tiny_test_reg"], depth=4))
    hf = hf_model(config, seed=7)
    ours = ours_from_hf(hf, config)
    x = torch.randn(2, 3, 182, 252, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        hidden = hf(pixel_values=x, output_hidden_states=True).hidden_states  # embeddings, block 0, ...
        for block in (0, 2, -2):
            ref = hf.layernorm(hidden[block % 4 + 1])
            out = ours(x, block=block)
            assert (out.cls - ref[:, 0]).abs().max() <= TOL
            assert (out.patch - ref[:, 5:]).abs().max() <= TOL
        assert not torch.allclose(ours(x, block=1).patch, ours(x).patch, atol=1e-3)
    with pytest.raises(ValueError, match="block 4"):
        ours(x, block=4)


def test_frames_of_a_batch_do_not_mix():
    model = random_model(BACKBONES["vit_tiny_test_reg"], seed=9).eval()
    x = torch.randn(3, 3, 182, 252, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        batch = model(x)
        alone = model(x[1:2])
    assert torch.allclose(batch.patch[1], alone.patch[0], atol=1e-5)
    assert torch.allclose(batch.registers[1], alone.registers[0], atol=1e-5)
    assert not torch.allclose(batch.patch[0], batch.patch[1], atol=1e-3)


def test_input_that_is_not_a_multiple_of_the_patch_size_is_refused():
    model = random_model(BACKBONES["vit_tiny_test"])
    with pytest.raises(ValueError, match="180x240 is not a multiple of 14"):
        model(torch.zeros(1, 3, 180, 240))


def seed_pipeline(frame: np.ndarray, target_h: int, target_w: int) -> np.ndarray:
    """The seed's val_transform: PadIfNeeded(border constant 0, centred) then Normalize, in cv2/numpy."""
    h, w, _ = frame.shape
    top, left = (target_h - h) // 2, (target_w - w) // 2
    padded = cv2.copyMakeBorder(frame, top, target_h - h - top, left, target_w - w - left, cv2.BORDER_CONSTANT, value=0)
    return ((padded / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).transpose(2, 0, 1)


@pytest.mark.parametrize("shape,grid", [((180, 240, 3), (13, 18)), ((160, 240, 3), (12, 18)), ((181, 239, 3), (13, 18))])
def test_pad_mode_replicates_the_seed(shape, grid):
    frames = synthetic_frames(2, shape, seed=11)
    settings = PreprocessSettings()
    out = preprocess(frames, settings)
    th, tw = grid[0] * 14, grid[1] * 14
    assert patch_grid(*shape[:2], settings) == grid
    assert out.shape == (2, 3, th, tw) and out.dtype == torch.float32
    for i in range(2):
        np.testing.assert_allclose(out[i].numpy(), seed_pipeline(frames[i], th, tw), atol=1e-5)
    black = (-np.array(IMAGENET_MEAN) / np.array(IMAGENET_STD)).astype(np.float32)
    np.testing.assert_allclose(out[0, :, -1, -1].numpy(), black, atol=1e-6)  # padding is black, not zero
    # a tensor, one frame without a batch axis, and numpy give the same result
    assert torch.equal(preprocess(torch.from_numpy(frames[1]), settings)[0], out[1])


def test_pad_centres_with_the_odd_row_at_the_bottom():
    frame = np.full((181, 239, 3), 255, np.uint8)
    out = preprocess(frame, PreprocessSettings())[0, 0]  # 182 x 252: 0 rows on top, 1 below; 6 left, 7 right
    white = (1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert out.shape == (182, 252)
    assert torch.allclose(out[0, 6:245], torch.tensor(white)) and out[181, 100] < 0
    assert out[100, 5] < 0 and out[100, 6] == pytest.approx(white) and out[100, 244] == pytest.approx(white)
    assert out[100, 245] < 0


def test_resize_mode():
    frame = np.empty((400, 600, 3), np.uint8)
    frame[...] = (10, 128, 250)  # a flat colour stays that colour through any resize
    auto = PreprocessSettings(mode="resize")
    assert patch_grid(400, 600, auto) == (29, 43)  # nearest multiples of 14: 406 x 602
    assert preprocess(frame, auto).shape == (1, 3, 406, 602)
    sized = PreprocessSettings(mode="resize", size=(168, 252))
    out = preprocess(frame, sized)
    assert out.shape == (1, 3, 168, 252) and patch_grid(400, 600, sized) == (12, 18)
    expected = (np.array([10, 128, 250]) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(out[0].mean(dim=(1, 2)).numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(out[0].std(dim=(1, 2)).numpy(), 0, atol=1e-4)


def test_preprocess_rejects_bad_frames_and_settings():
    with pytest.raises(ValueError, match="uint8 RGB"):
        preprocess(np.zeros((1, 28, 28, 3), np.float32), PreprocessSettings())
    with pytest.raises(ValueError, match="uint8 RGB"):
        preprocess(np.zeros((1, 28, 28, 4), np.uint8), PreprocessSettings())
    with pytest.raises(UserError, match="mode 'crop'"):
        PreprocessSettings(mode="crop")
    with pytest.raises(UserError, match="multiple of 14"):
        PreprocessSettings(mode="resize", size=(100, 252))


def tiny_backbone(name="vit_tiny_test_reg", seed=12) -> Backbone:
    model = random_model(BACKBONES[name], seed).eval().requires_grad_(False)
    return Backbone(model, BACKBONES[name], name, "RANDOM test", weights_digest(model))


def test_feature_extractor_matches_the_model_and_bf16_stays_close():
    backbone = tiny_backbone()
    frames = synthetic_frames(3, (180, 240, 3), seed=13)
    settings = PreprocessSettings()
    with torch.no_grad():
        ref = backbone.model(preprocess(frames, settings))
    extractor = FeatureExtractor(backbone, settings, bf16=False)  # the default follows the CPU: test_precision.py
    assert extractor.grid(180, 240) == (13, 18)
    out = extractor(frames)
    assert out.patch.shape == (3, 13 * 18, 48) and out.patch.is_inference()
    assert torch.equal(out.patch, ref.patch) and torch.equal(out.cls, ref.cls)
    half = FeatureExtractor(backbone, settings, bf16=True)(frames)
    error = ((half.patch - ref.patch).norm() / ref.patch.norm()).item()
    assert 0 < error < 0.05 and half.patch.dtype == torch.float32  # bf16 really ran, and stayed close
    early = FeatureExtractor(backbone, settings, bf16=False, block=0)(frames)
    assert torch.equal(early.patch, backbone.model(preprocess(frames, settings), block=0).patch)


def test_feature_extractor_refuses_a_patch_size_mismatch():
    with pytest.raises(UserError, match="patch size 14"):
        FeatureExtractor(tiny_backbone(), PreprocessSettings(multiple=16))


@pytest.mark.slow
def test_compiled_extractor_gives_the_same_tokens():
    backbone = tiny_backbone()
    frames = synthetic_frames(2, (180, 240, 3), seed=14)
    ref = FeatureExtractor(backbone, PreprocessSettings(), bf16=False)(frames)
    out = FeatureExtractor(backbone, PreprocessSettings(), bf16=False, compile=True)(frames)
    assert torch.allclose(out.patch, ref.patch, atol=1e-5)


def test_bench_cli_prints_speed_and_bf16_error(capsys):
    main(["--backbones", "vit_tiny_test", "vit_tiny_test_reg", "vit3_tiny_test", "--batch", "2",
          "--iters", "1", "--device", "cpu"])
    text = capsys.readouterr().out
    assert "frames 180x240, padded to each backbone's patch size, batch 2, median of 1 batches" in text
    assert "RANDOM" in text
    rows = [line.split() for line in text.splitlines() if line.startswith(("vit_tiny_test", "vit3_tiny_test"))]
    assert [r[:2] for r in rows] == [["vit_tiny_test", "13x18"], ["vit_tiny_test_reg", "13x18"], ["vit3_tiny_test", "12x15"]]
    for row in rows:
        fp32_ms, bf16_ms, patch_err, cls_err = map(float, row[-4:])
        assert fp32_ms > 0 and bf16_ms > 0 and 0 < patch_err < 0.05 and 0 < cls_err < 0.05


def test_bench_cli_refuses_bad_flags():
    with pytest.raises(UserError, match="--batch 0"):
        main(["--batch", "0"])
    with pytest.raises(UserError, match="backbone 'vit_huge' is unknown"):
        main(["--backbones", "vit_huge", "--device", "cpu"])
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0


def test_raw_patch_control_is_the_identity_on_pixel_patches():
    from extract_features.extractor import FeatureExtractor
    from extract_features.loader import load_backbone
    from extract_features.preprocess import PreprocessSettings, preprocess

    control = load_backbone("raw_patches14", "none")
    assert control.config.embed_dim == 588 and "raw" in control.weights_label
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 180, 240, 3), dtype=np.uint8)
    out = FeatureExtractor(control, PreprocessSettings())(frames)
    x = preprocess(frames, PreprocessSettings())  # (2, 3, 182, 252)
    assert out.patch.shape == (2, 13 * 18, 588)
    # token (row 1, col 2) holds channel-major pixels of that 14x14 patch
    np.testing.assert_array_equal(out.patch[1, 1 * 18 + 2].numpy(), x[1, :, 14:28, 28:42].reshape(-1).numpy())
    np.testing.assert_allclose(out.cls.numpy(), out.patch.mean(dim=1).numpy(), rtol=1e-6)


def test_list_names_every_backbone_and_its_weights(capsys):
    from extract_features.loader import main as loader_main
    loader_main(["--list"])
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(rows) == set(BACKBONES)
    assert rows["dinov2_vits14"].endswith("https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth")
    assert rows["vit_tiny_test"].endswith("(none: random only)")
