"""DINOv3 against transformers' DINOv3ViTModel (random fp32 weights), and its weight loading on synthetic
checkpoints in the release's and Hugging Face's key layouts."""
import json
from urllib.error import URLError

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import DINOv3ViTConfig, DINOv3ViTModel

from data.errors import UserError
from extract_features.extractor import FeatureExtractor
from extract_features.loader import load_backbone
from extract_features.models import BACKBONES, preprocess_settings, random_model
from extract_features.dinov3 import Dinov3Config, DinoV3
from extract_features.dinov3_weights import REQUEST_URL, official_url
from extract_features.preprocess import PreprocessSettings, input_size
from extract_features.weights import hub_cache_path

# square, and the 240x180 frame padded (240x192) or resized (240x176) to multiples of 16
SIZES = [(64, 64), (192, 240), (176, 240)]
TOL = 1e-4


def release_keys(depth: int, swiglu: bool) -> set[str]:
    """The key set of facebookresearch/dinov3's DinoVisionTransformer state dicts for the LVD-1689M
    checkpoints (n_storage_tokens=4, mask_k_bias=True, tied norms), from the module names in its code."""
    keys = {"cls_token", "storage_tokens", "mask_token", "patch_embed.proj.weight", "patch_embed.proj.bias",
            "rope_embed.periods", "norm.weight", "norm.bias"}
    ffn = ("mlp.w1", "mlp.w2", "mlp.w3") if swiglu else ("mlp.fc1", "mlp.fc2")
    for i in range(depth):
        keys |= {f"blocks.{i}.{m}.{p}" for m in ("norm1", "attn.qkv", "attn.proj", "norm2", *ffn) for p in ("weight", "bias")}
        keys |= {f"blocks.{i}.attn.qkv.bias_mask", f"blocks.{i}.ls1.gamma", f"blocks.{i}.ls2.gamma"}
    return keys


def hf_config(c: Dinov3Config) -> DINOv3ViTConfig:
    return DINOv3ViTConfig(hidden_size=c.embed_dim, intermediate_size=c.ffn_hidden, num_hidden_layers=c.depth,
                           num_attention_heads=c.num_heads, num_register_tokens=c.num_registers, patch_size=c.patch_size,
                           use_gated_mlp=c.ffn == "swiglu", hidden_act="silu" if c.ffn == "swiglu" else "gelu",
                           layer_norm_eps=c.layer_norm_eps, rope_theta=c.rope_base)


def hf_model(c: Dinov3Config, seed: int = 0) -> DINOv3ViTModel:
    """Every parameter random (LayerScale and biases too, unlike the init), so every path shows."""
    torch.manual_seed(seed)
    model = DINOv3ViTModel(hf_config(c)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def to_release(hf_state: dict, c: Dinov3Config, k_bias_seed: int = 7) -> dict:
    """Hugging Face names → the release's, written independently of dinov3_weights.py. The key bias the
    release keeps in its fused qkv (and masks) is filled with noise: it must not change the output."""
    out = {"cls_token": hf_state["embeddings.cls_token"], "storage_tokens": hf_state["embeddings.register_tokens"],
           "mask_token": hf_state["embeddings.mask_token"][0], "patch_embed.proj.weight": hf_state["embeddings.patch_embeddings.weight"],
           "patch_embed.proj.bias": hf_state["embeddings.patch_embeddings.bias"], "norm.weight": hf_state["norm.weight"],
           "norm.bias": hf_state["norm.bias"],
           "rope_embed.periods": c.rope_base ** (2 * torch.arange(c.head_dim // 4) / (c.head_dim // 2))}
    g = torch.Generator().manual_seed(k_bias_seed)
    for i in range(c.depth):
        hf = {k.removeprefix(f"model.layer.{i}."): v for k, v in hf_state.items() if k.startswith(f"model.layer.{i}.")}
        b = f"blocks.{i}."
        out[b + "attn.qkv.weight"] = torch.cat([hf[f"attention.{p}_proj.weight"] for p in "qkv"])
        q_bias = hf["attention.q_proj.bias"]
        out[b + "attn.qkv.bias"] = torch.cat([q_bias, torch.randn(q_bias.shape, generator=g), hf["attention.v_proj.bias"]])
        out[b + "attn.qkv.bias_mask"] = torch.cat([torch.ones_like(q_bias), torch.zeros_like(q_bias), torch.ones_like(q_bias)])
        names = {"attention.o_proj": "attn.proj", "norm1": "norm1", "norm2": "norm2"}
        names |= ({"mlp.gate_proj": "mlp.w1", "mlp.up_proj": "mlp.w2", "mlp.down_proj": "mlp.w3"} if c.ffn == "swiglu"
                  else {"mlp.up_proj": "mlp.fc1", "mlp.down_proj": "mlp.fc2"})
        for theirs, ours in names.items():
            out[b + ours + ".weight"], out[b + ours + ".bias"] = hf[theirs + ".weight"], hf[theirs + ".bias"]
        out[b + "ls1.gamma"], out[b + "ls2.gamma"] = hf["layer_scale1.lambda1"], hf["layer_scale2.lambda1"]
    return out


def ours_from_hf(hf: DINOv3ViTModel, c: Dinov3Config) -> DinoV3:
    model = DinoV3(c).eval()
    model.load_state_dict(to_release(hf.state_dict(), c), strict=True)
    return model


def assert_same_tokens(hf: DINOv3ViTModel, ours: DinoV3, x: torch.Tensor) -> None:
    r = ours.config.num_registers
    with torch.no_grad():
        ref = hf(x, output_hidden_states=True)
        out = ours(x, layers=(0,))
    tokens = ref.last_hidden_state
    assert out.patch.shape == (x.shape[0], (x.shape[2] // 16) * (x.shape[3] // 16), ours.config.embed_dim)
    torch.testing.assert_close(out.cls, tokens[:, 0], atol=TOL, rtol=0)
    torch.testing.assert_close(out.registers, tokens[:, 1:1 + r], atol=TOL, rtol=0)
    torch.testing.assert_close(out.patch, tokens[:, 1 + r:], atol=TOL, rtol=0)
    # hidden_states[1] is the output of block 0, before the final norm
    torch.testing.assert_close(out.layers[0], hf.norm(ref.hidden_states[1])[:, 1 + r:], atol=TOL, rtol=0)
    assert out.patch.abs().mean() > 0.1  # the comparison is not between near-zero tokens


TINY = {"mlp": BACKBONES["vit3_tiny_test"], "swiglu": BACKBONES["vit3_tiny_test_swiglu"]}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("kind", list(TINY))
def test_tiny_configs_equal_transformers(kind, size):
    hf = hf_model(TINY[kind], seed=1)
    assert_same_tokens(hf, ours_from_hf(hf, TINY[kind]), torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(2)))


@pytest.mark.parametrize("name", ["dinov3_vits16"] + [
    pytest.param(n, marks=pytest.mark.slow) for n in ("dinov3_vits16plus", "dinov3_vitb16", "dinov3_vitl16", "dinov3_vith16plus")])
def test_release_geometry_equals_transformers(name):
    config = BACKBONES[name]
    hf = hf_model(config, seed=3)
    ours = ours_from_hf(hf, config)
    for size in SIZES[:2]:
        assert_same_tokens(hf, ours, torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(4)))


@pytest.mark.parametrize("name,swiglu,hidden", [("dinov3_vits16", False, 1536), ("dinov3_vits16plus", True, 1536),
                                                ("dinov3_vitb16", False, 3072), ("dinov3_vitl16", False, 4096),
                                                ("dinov3_vith16plus", True, 5120)])
def test_parameter_names_and_widths_are_the_releases(name, swiglu, hidden):
    config = BACKBONES[name]
    with torch.device("meta"):
        state = DinoV3(config).state_dict()
    assert set(state) == release_keys(config.depth, swiglu)
    assert state[f"blocks.0.mlp.{'w1' if swiglu else 'fc1'}.weight"].shape == (hidden, config.embed_dim)
    assert state["storage_tokens"].shape == (1, 4, config.embed_dim)


def test_key_bias_is_masked_and_rope_depends_on_position():
    model = random_model(TINY["mlp"], seed=2).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for block in model.blocks:
            block.ls1.gamma.fill_(1.0)  # the init's 1e-5 would hide the attention
            block.ls2.gamma.fill_(1.0)
        before = model(x).patch
        model.blocks[0].attn.qkv.bias[48:96] += 5.0  # the key bias: masked
        assert torch.equal(model(x).patch, before)
        model.blocks[0].attn.qkv.bias_mask.fill_(1.0)  # unmasked, it would count: RoPE rotates it per position
        assert not torch.allclose(model(x).patch, before, atol=1e-3)
        # the same patch content at two places gets two tokens: RoPE tells positions apart
        tile = torch.randn(1, 3, 16, 16)
        same = model(tile.repeat(1, 1, 2, 2)).patch[0]
        assert not torch.allclose(same[0], same[3], atol=1e-3)


def test_random_model_is_the_release_init_and_named_random():
    backbone = load_backbone("vit3_tiny_test", "random", seed=5)
    assert backbone.is_random and "not DINOv3 features" in backbone.weights_label
    model = backbone.model
    assert torch.all(model.blocks[0].ls1.gamma == 1e-5)
    assert torch.equal(model.blocks[0].attn.qkv.bias_mask, torch.tensor([1.0] * 48 + [0.0] * 48 + [1.0] * 48))
    again = load_backbone("vit3_tiny_test", "random", seed=5)
    assert again.weights_digest == backbone.weights_digest
    assert load_backbone("vit3_tiny_test", "random", seed=6).weights_digest != backbone.weights_digest


def test_extractor_pads_240x180_to_240x192_and_runs_earlier_layers():
    backbone = load_backbone("vit3_tiny_test", "random")
    settings = preprocess_settings(backbone.config)
    assert input_size(180, 240, settings) == (192, 240)
    assert input_size(180, 240, preprocess_settings(backbone.config, "resize")) == (176, 240)
    frames = np.random.default_rng(0).integers(0, 256, (2, 180, 240, 3), dtype=np.uint8)
    extractor = FeatureExtractor(backbone, settings, bf16=False, layers=(0,))
    assert extractor.grid(180, 240) == (12, 15)
    out = extractor(frames)
    assert out.patch.shape == (2, 180, 48) and len(out.layers) == 1 and out.layers[0].shape == (2, 180, 48)
    with torch.no_grad():
        direct = backbone.model(extractor_input(frames, settings), layers=(0,))
    torch.testing.assert_close(out.layers[0], direct.layers[0])
    with pytest.raises(UserError, match="patch size 16 of vit3_tiny_test; set it to 16"):
        FeatureExtractor(backbone, PreprocessSettings())


def extractor_input(frames, settings):
    from extract_features.preprocess import preprocess
    return preprocess(frames, settings)


# --- weights ------------------------------------------------------------------------------------------

@pytest.fixture
def release_state():
    config = TINY["swiglu"]
    return to_release(hf_model(config, seed=8).state_dict(), config)


def test_release_pth_loads_strictly_with_the_same_tokens(tmp_path, release_state):
    path = tmp_path / "dinov3_tiny.pth"
    torch.save(release_state, path)
    backbone = load_backbone("vit3_tiny_test_swiglu", str(path))
    assert backbone.weights_label == str(path) and not backbone.is_random
    for key, tensor in release_state.items():
        assert torch.equal(backbone.model.state_dict()[key], tensor)
    # a training checkpoint nests the teacher's backbone
    torch.save({"teacher": {f"backbone.{k}": v for k, v in release_state.items()}}, tmp_path / "train.pth")
    assert load_backbone("vit3_tiny_test_swiglu", str(tmp_path / "train.pth")).weights_digest == backbone.weights_digest


@pytest.mark.parametrize("hub_names", [True, False], ids=["hub-file-names", "transformers5-names"])
def test_hugging_face_folder_gives_the_release_tokens(tmp_path, hub_names):
    config = TINY["swiglu"]
    hf = hf_model(config, seed=8)
    folder = tmp_path / "dinov3-tiny"
    folder.mkdir()
    state = hf.state_dict()
    if hub_names:  # files on the Hub predate transformers 5's "model." prefix
        state = {k.removeprefix("model."): v for k, v in state.items()}
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(hf.config.to_json_string())
    from_hf = load_backbone("vit3_tiny_test_swiglu", str(folder))
    assert from_hf.weights_label == f"Hugging Face folder {folder}"
    x = torch.randn(1, 3, 192, 240)
    with torch.no_grad():
        torch.testing.assert_close(from_hf.model(x).patch, hf(x).last_hidden_state[:, 5:], atol=TOL, rtol=0)


def test_hugging_face_folder_errors(tmp_path):
    config = TINY["mlp"]
    hf = hf_model(config)
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({**json.loads(hf.config.to_json_string()), "num_attention_heads": 6}))
    with pytest.raises(UserError, match="config.json: 6 attention heads, but vit3_tiny_test has 3"):
        load_backbone("vit3_tiny_test", str(folder))
    (folder / "config.json").write_text(json.dumps({"model_type": "dinov2"}))
    with pytest.raises(UserError, match="model_type 'dinov2' is not one of dinov3_vit"):
        load_backbone("vit3_tiny_test", str(folder))


def test_size_mismatch_names_the_backbone_the_checkpoint_holds(tmp_path, release_state):
    path = tmp_path / "swiglu.pth"
    torch.save(release_state, path)
    with pytest.raises(UserError, match=r"holds vit3_tiny_test_swiglu \(.*swiglu FFN 192 wide.*but vit3_tiny_test "
                                        r"\(.*mlp FFN 192 wide.*choose vit3_tiny_test_swiglu"):
        load_backbone("vit3_tiny_test", str(path))
    small = random_model(BACKBONES["dinov3_vits16"])
    torch.save(small.state_dict(), tmp_path / "s16.pth")
    with pytest.raises(UserError, match=r"holds dinov3_vits16 \(dim 384.*but dinov3_vitb16 \(dim 768"):
        load_backbone("dinov3_vitb16", str(tmp_path / "s16.pth"))
    dinov2 = random_model(BACKBONES["vit_tiny_test_reg"]).state_dict()
    torch.save(dinov2, tmp_path / "v2.pth")
    with pytest.raises(UserError, match="neither the official DINOv3 key layout"):
        load_backbone("vit3_tiny_test", str(tmp_path / "v2.pth"))
    del release_state["blocks.1.ls2.gamma"]
    torch.save(release_state, path)
    with pytest.raises(UserError, match=r"missing \['blocks.1.ls2.gamma'\]"):
        load_backbone("vit3_tiny_test_swiglu", str(path))


def test_official_weights_offline_say_which_file_where_and_where_to_ask(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    url = official_url("dinov3_vitb16")
    assert url.endswith("/dinov3_vitb16/dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth")
    with pytest.raises(UserError) as err:
        load_backbone("dinov3_vitb16", "official")
    message = str(err.value)
    assert "dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth" in message and REQUEST_URL in message
    assert str(hub_cache_path(url)) in message and str(tmp_path / "torch") in message
    assert "facebook/dinov3-vitb16-pretrain-lvd1689m" in message
    with pytest.raises(UserError, match="'vit3_tiny_test' has no released weights"):
        load_backbone("vit3_tiny_test", "official")


def test_official_weights_come_from_the_hub_cache(tmp_path, monkeypatch, release_state):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    small = random_model(BACKBONES["dinov3_vits16"], seed=3)
    cached = hub_cache_path(official_url("dinov3_vits16"))
    cached.parent.mkdir(parents=True)
    torch.save(small.state_dict(), cached)
    backbone = load_backbone("dinov3_vits16", "official", progress=False)
    assert backbone.weights_label == "official dinov3_vits16_pretrain_lvd1689m-08c60483.pth"
    assert backbone.weights_digest == load_backbone("dinov3_vits16", "random", seed=3).weights_digest


@pytest.mark.parametrize("name", ["vit_tiny_test_reg", "vit3_tiny_test"])
def test_earlier_layers_are_the_tokens_of_those_blocks(name):
    """layers= gives, beside the last block's tokens, what block= gives alone (DINOv2 and DINOv3 alike)."""
    model = random_model(BACKBONES[name], seed=3).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        both = model(x, layers=(0, -2))
        torch.testing.assert_close(both.patch, model(x).patch, atol=0, rtol=0)
        for got, block in zip(both.layers, (0, -2)):
            torch.testing.assert_close(got, model(x, block=block).patch, atol=0, rtol=0)
        with pytest.raises(ValueError, match="layer 1 is not a block before block 1"):
            model(x, layers=(1,))
