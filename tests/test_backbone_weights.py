"""Weight loading on synthetic checkpoints written here: official .pth, Hugging Face folders, hub cache, random."""
import json
import pickle
from urllib.error import URLError

import pytest
import torch
from safetensors.torch import save_file

from data.errors import UserError
from extract_features.loader import load_backbone
from extract_features.models import BACKBONES, DinoV2, ViTConfig, random_model
from extract_features.weights import hub_cache_path, official_url, weights_digest


def official_keys(depth: int, registers: bool, swiglu: bool) -> set[str]:
    """The key set of facebookresearch/dinov2's state dicts (block_chunks=0, as the hub checkpoints)."""
    keys = {"cls_token", "pos_embed", "mask_token", "patch_embed.proj.weight", "patch_embed.proj.bias",
            "norm.weight", "norm.bias"} | ({"register_tokens"} if registers else set())
    ffn = ("mlp.w12", "mlp.w3") if swiglu else ("mlp.fc1", "mlp.fc2")
    for i in range(depth):
        keys |= {f"blocks.{i}.{m}.{p}" for m in ("norm1", "attn.qkv", "attn.proj", "norm2", *ffn) for p in ("weight", "bias")}
        keys |= {f"blocks.{i}.ls1.gamma", f"blocks.{i}.ls2.gamma"}
    return keys


def to_hf_legacy(state: dict) -> dict:
    """Official names → the names in Hugging Face's model.safetensors files, written independently of weights.py."""
    top = {"cls_token": "embeddings.cls_token", "mask_token": "embeddings.mask_token",
           "pos_embed": "embeddings.position_embeddings", "register_tokens": "embeddings.register_tokens",
           "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
           "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
           "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
    inner = {"norm1": "norm1", "norm2": "norm2", "attn.proj": "attention.output.dense", "ls1.gamma": "layer_scale1.lambda1",
             "ls2.gamma": "layer_scale2.lambda1", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
             "mlp.w12": "mlp.weights_in", "mlp.w3": "mlp.weights_out"}
    out = {}
    for key, t in state.items():
        if key in top:
            out[top[key]] = t
            continue
        _, i, rest = key.split(".", 2)
        if rest.startswith("attn.qkv."):
            for name, part in zip(("query", "key", "value"), t.chunk(3, dim=0)):
                out[f"encoder.layer.{i}.attention.attention.{name}.{rest.rsplit('.', 1)[1]}"] = part.contiguous()
            continue
        module, param = rest.rsplit(".", 1) if not rest.endswith("gamma") else (rest, "")
        out[f"encoder.layer.{i}.{inner[module]}" + (f".{param}" if param else "")] = t
    return out


def write_hf_folder(folder, model: DinoV2, model_type=None, heads=None):
    c = model.config
    folder.mkdir()
    save_file(to_hf_legacy(model.state_dict()), str(folder / "model.safetensors"))
    config = {"model_type": model_type or ("dinov2_with_registers" if c.num_registers else "dinov2"),
              "hidden_size": c.embed_dim, "num_hidden_layers": c.depth, "num_attention_heads": heads or c.num_heads,
              "patch_size": c.patch_size, "image_size": c.img_size, "use_swiglu_ffn": c.ffn == "swiglu"}
    if c.num_registers:
        config["num_register_tokens"] = c.num_registers
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def outputs(model, seed=0):
    x = torch.randn(2, 3, 182, 252, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(x)


@pytest.fixture(scope="module")
def s14(tmp_path_factory):
    """A synthetic dinov2_vits14 checkpoint in the official layout, and the model it came from."""
    model = random_model(BACKBONES["dinov2_vits14"], seed=21)
    path = tmp_path_factory.mktemp("s14") / "dinov2_vits14_pretrain.pth"
    torch.save(model.state_dict(), path)
    return path, model


def test_our_parameter_names_are_the_official_layout():
    assert set(DinoV2(BACKBONES["vit_tiny_test"]).state_dict()) == official_keys(2, False, False)
    assert set(DinoV2(BACKBONES["vit_tiny_test_reg"]).state_dict()) == official_keys(2, True, False)
    assert set(DinoV2(ViTConfig(48, 2, 3, ffn="swiglu")).state_dict()) == official_keys(2, False, True)
    # ViT-g's fused SwiGLU hidden width, as released: 2/3 of 4 x 1536 rounded up to a multiple of 8
    with torch.device("meta"):
        g = DinoV2(BACKBONES["dinov2_vitg14_reg"])
    assert g.blocks[0].mlp.w12.weight.shape == (8192, 1536) and g.register_tokens.shape == (1, 4, 1536)
    assert g.pos_embed.shape == (1, 1 + 37 * 37, 1536)


def test_official_urls():
    assert official_url("dinov2_vits14") == "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth"
    assert official_url("dinov2_vitg14_reg") == \
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitg14/dinov2_vitg14_reg4_pretrain.pth"
    with pytest.raises(UserError, match="vit_tiny_test' has no released weights"):
        load_backbone("vit_tiny_test", "official")


@pytest.mark.parametrize("name", ["vit_tiny_test", "vit_tiny_test_reg"])
def test_official_pth_loads_exactly(tmp_path, name):
    source = random_model(BACKBONES[name], seed=22)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    backbone = load_backbone(name, str(path))
    assert backbone.name == name and backbone.weights_label == str(path) and not backbone.is_random
    assert not backbone.model.training and not any(p.requires_grad for p in backbone.model.parameters())
    for key, tensor in source.state_dict().items():
        assert torch.equal(backbone.model.state_dict()[key], tensor), key
    assert torch.equal(outputs(backbone.model).patch, outputs(source).patch)
    assert backbone.weights_digest == weights_digest(source)
    assert backbone.weights_digest != weights_digest(random_model(BACKBONES[name], seed=23))


def test_training_checkpoint_wrapping_is_unwrapped(tmp_path):
    source = random_model(BACKBONES["vit_tiny_test"], seed=24)
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()} | {"dino_head.mlp.0.weight": torch.ones(2)}
    torch.save({"teacher": state}, tmp_path / "teacher_checkpoint.pth")
    backbone = load_backbone("vit_tiny_test", str(tmp_path / "teacher_checkpoint.pth"))
    assert backbone.weights_digest == weights_digest(source)


@pytest.mark.parametrize("name", ["vit_tiny_test", "vit_tiny_test_reg"])
def test_hugging_face_folder_loads_to_the_same_tensors(tmp_path, name):
    source = random_model(BACKBONES[name], seed=25)
    folder = write_hf_folder(tmp_path / "dinov2-tiny", source)
    backbone = load_backbone(name, str(folder))
    assert backbone.weights_label == f"Hugging Face folder {folder}"
    assert backbone.weights_digest == weights_digest(source)  # same tensors as the .pth route
    assert torch.equal(outputs(backbone.model).cls, outputs(source).cls)


@pytest.mark.parametrize("name", ["vit_tiny_test", "vit_tiny_test_reg"])
def test_folder_saved_by_transformers_gives_its_tokens(tmp_path, name):
    from tests.test_backbone import hf_model

    config = BACKBONES[name]
    hf = hf_model(config, seed=26)
    hf.save_pretrained(tmp_path / "hf")
    backbone = load_backbone(name, str(tmp_path / "hf"))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(27))  # the native 16x16 grid
    with torch.no_grad():
        ref = hf(pixel_values=x).last_hidden_state
        out = backbone.model(x)
    r = config.num_registers
    assert (out.cls - ref[:, 0]).abs().max() <= 1e-4 and (out.patch - ref[:, 1 + r:]).abs().max() <= 1e-4


def test_size_mismatch_is_refused_naming_both(s14):
    path, _ = s14
    with pytest.raises(UserError) as error:
        load_backbone("dinov2_vitb14", str(path))
    message = str(error.value)
    assert "holds dinov2_vits14 (dim 384, 12 blocks" in message and "but dinov2_vitb14 (dim 768" in message
    assert "\n" not in message


def test_register_mismatch_is_refused(tmp_path):
    torch.save(random_model(BACKBONES["vit_tiny_test_reg"]).state_dict(), tmp_path / "reg.pth")
    with pytest.raises(UserError, match=r"holds vit_tiny_test_reg \(.*4 registers.*but vit_tiny_test \(.*0 registers"):
        load_backbone("vit_tiny_test", str(tmp_path / "reg.pth"))
    folder = write_hf_folder(tmp_path / "hf", random_model(BACKBONES["vit_tiny_test"]))
    with pytest.raises(UserError, match="holds vit_tiny_test .*but vit_tiny_test_reg"):
        load_backbone("vit_tiny_test_reg", str(folder))


def test_hugging_face_folder_problems_are_named(tmp_path):
    model = random_model(BACKBONES["vit_tiny_test"])
    with pytest.raises(UserError, match="config.json: 6 attention heads, but vit_tiny_test has 3"):
        load_backbone("vit_tiny_test", str(write_hf_folder(tmp_path / "a", model, heads=6)))
    with pytest.raises(UserError, match="model_type 'vit' is not one of dinov2"):
        load_backbone("vit_tiny_test", str(write_hf_folder(tmp_path / "b", model, model_type="vit")))
    (tmp_path / "b" / "model.safetensors").unlink()
    (tmp_path / "b" / "config.json").write_text(json.dumps({"model_type": "dinov2", "num_attention_heads": 3}))
    with pytest.raises(UserError, match="no model.safetensors"):
        load_backbone("vit_tiny_test", str(tmp_path / "b"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        load_backbone("vit_tiny_test", str(tmp_path / "empty"))


def test_unreadable_or_foreign_files_are_refused(tmp_path):
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(UserError, match="text.pth: not a readable state dict"):
        load_backbone("vit_tiny_test", str(tmp_path / "text.pth"))
    with open(tmp_path / "code.pth", "wb") as f:  # a pickle that would run code: weights_only refuses it
        pickle.dump({"cls_token": torch.nn.Linear(2, 2)}, f, protocol=2)
    with pytest.raises(UserError, match="code.pth: not a readable state dict"):
        load_backbone("vit_tiny_test", str(tmp_path / "code.pth"))
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="neither the official DINOv2 key layout"):
        load_backbone("vit_tiny_test", str(tmp_path / "other.pth"))
    state = random_model(BACKBONES["vit_tiny_test"]).state_dict()
    del state["blocks.1.ls2.gamma"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(UserError, match=r"missing \['blocks.1.ls2.gamma'\]"):
        load_backbone("vit_tiny_test", str(tmp_path / "partial.pth"))
    with pytest.raises(UserError, match="no such file or folder"):
        load_backbone("vit_tiny_test", str(tmp_path / "absent.pth"))
    with pytest.raises(UserError, match="backbone 'dinov3' is unknown"):
        load_backbone("dinov3", "random")


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty torch home and no network: every download raises URLError."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def no_network(url, dst, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def test_offline_with_nothing_cached_says_which_file_to_place_where(offline):
    with pytest.raises(UserError) as error:
        load_backbone("dinov2_vitb14_reg", "official")
    message = str(error.value)
    assert "\n" not in message
    assert "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_reg4_pretrain.pth" in message
    assert f"place it at {offline / 'dinov2_vitb14_reg4_pretrain.pth'}" in message
    assert not any(offline.iterdir())  # nothing half-written left in the cache


def test_cached_official_checkpoint_is_used_offline(offline, s14):
    path, source = s14
    cached = hub_cache_path(official_url("dinov2_vits14"))
    assert cached == offline / "dinov2_vits14_pretrain.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    backbone = load_backbone("dinov2_vits14", "official")
    assert backbone.weights_label == "official dinov2_vits14_pretrain.pth"
    assert backbone.weights_digest == weights_digest(source)
    cached.write_bytes(b"truncated download")
    with pytest.raises(UserError, match="dinov2_vits14_pretrain.pth: unreadable checkpoint .* delete it"):
        load_backbone("dinov2_vits14", "official")


def test_random_weights_are_seeded_labelled_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = load_backbone("vit_tiny_test_reg", "random", seed=1)
    assert torch.equal(torch.rand(3), expected)
    b = load_backbone("vit_tiny_test_reg", "random", seed=1)
    c = load_backbone("vit_tiny_test_reg", "random", seed=2)
    assert "RANDOM" in a.weights_label and "seed 1" in a.weights_label and a.is_random
    assert a.weights_digest == b.weights_digest != c.weights_digest
    assert len(a.weights_digest) == 64 and int(a.weights_digest, 16) >= 0
    assert torch.equal(outputs(a.model).patch, outputs(b.model).patch)
    assert not a.model.training and not any(p.requires_grad for p in a.model.parameters())
