"""Where a backbone's weights come from, and the checks that they are the weights that were asked for.

`weights` (the --weights flag) is one of
    official   the release checkpoint of the backbone, fetched by torch.hub.load_state_dict_from_url into
               the torch hub cache ($TORCH_HOME/hub/checkpoints, default ~/.cache/torch/hub/checkpoints)
               and reused from there, e.g. dinov2_vitb14_pretrain.pth, dinov2_vitb14_reg4_pretrain.pth
    FILE.pth   a state dict in the official key layout (cls_token, pos_embed, blocks.N.attn.qkv, ...)
    FOLDER     a Hugging Face facebook/dinov2-* or dinov2-with-registers-* folder (config.json +
               model.safetensors); its keys are mapped onto the official ones by hf_to_official
    random     seeded random initialisation for tests and the demo, labelled RANDOM

Every torch.load uses weights_only=True, so no code in a checkpoint runs. The model itself and
load_backbone, which puts weights into it, are in models.py and loader.py.
"""
import hashlib
import json
import math
import re
from pathlib import Path
from urllib.error import URLError

import torch
from safetensors.torch import load_file

from data.errors import UserError
from extract_features.models import BACKBONES, ViTConfig

OFFICIAL_BASE_URL = "https://dl.fbaipublicfiles.com/dinov2"
HF_MODEL_TYPES = ("dinov2", "dinov2_with_registers")


def official_url(name: str) -> str:
    """dinov2_vits14 → .../dinov2_vits14/dinov2_vits14_pretrain.pth; the _reg models → ..._reg4_pretrain.pth."""
    if not re.fullmatch(r"dinov2_vit[sblg]14(_reg)?", name):
        raise UserError(f"backbone '{name}' has no released weights; use --weights random, a .pth or a Hugging Face folder")
    base = name.removesuffix("_reg")
    registers = "_reg4" if name.endswith("_reg") else ""  # every released register model has 4
    return f"{OFFICIAL_BASE_URL}/{base}/{base}{registers}_pretrain.pth"


def hub_cache_path(url: str) -> Path:
    """Where torch.hub.load_state_dict_from_url keeps the file of this URL."""
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 hex over names, dtypes, shapes and bytes of every tensor in the state dict, in name order."""
    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        h.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def read_weights(name: str, config: ViTConfig, weights: str, progress: bool = True) -> tuple[dict, str]:
    """State dict in the official layout, checked against `config`, and a label saying where it came from."""
    path, heads = Path(weights).expanduser(), None  # heads: only a Hugging Face config.json says
    if weights == "official":
        url = official_url(name)
        state, label = download(url, progress), f"official {url.rsplit('/', 1)[1]}"
    else:
        label = str(path)
        if path.is_dir():
            state, hf = read_hf_folder(path)
            heads, label = hf.get("num_attention_heads", 12), f"Hugging Face folder {path}"  # 12: transformers' default
        elif path.is_file():
            state = read_file(path)
        else:
            raise UserError(f"--weights {weights}: no such file or folder; use 'official', 'random', "
                            f"a .pth file or a Hugging Face folder (config.json + model.safetensors)")
    state = to_official_layout(state, label)
    check_matches(_structure(state, label), name, config, label)
    if heads is not None and heads != config.num_heads:
        raise UserError(f"{path / 'config.json'}: {heads} attention heads, but {name} has {config.num_heads}")
    return state, label


def download(url: str, progress: bool, where: str = "fetch that file elsewhere") -> dict:
    """The checkpoint at url through the torch hub cache; `where` tells a user without network how to get it."""
    cached = hub_cache_path(url)
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=progress,
                                                  check_hash=False, weights_only=True)
    except (URLError, OSError) as e:  # no network, DNS, HTTP error, unwritable cache
        reason = getattr(e, "reason", None) or e
        raise UserError(f"cannot download {url} ({reason}) and it is not cached: {where} "
                        f"and place it at {cached}, or pass --weights FILE.pth or a Hugging Face folder") from None
    except Exception as e:  # torch.load raises many types for damaged files
        raise UserError(f"{cached}: unreadable checkpoint ({first_line(e)}); delete it to download it again") from None


def read_file(path: Path) -> dict:
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types for damaged or foreign files
        raise UserError(f"{path}: not a readable state dict ({first_line(e)}); pass an official DINOv2 or DINOv3 .pth") from None
    for wrapper in ("model", "state_dict", "teacher"):  # training checkpoints nest the weights
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: holds no state dict of tensors; pass an official DINOv2 or DINOv3 .pth")
    if any(k.startswith("backbone.") for k in state):  # a DINOv2/v3 training checkpoint: keep the ViT only
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    return {k.removeprefix("module."): v for k, v in state.items()}


def read_hf_folder(folder: Path, model_types: tuple[str, ...] = HF_MODEL_TYPES,
                   example: str = "facebook/dinov2-small") -> tuple[dict, dict]:
    """The state dict (Hugging Face names) and config.json of a transformers folder."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise UserError(f"{folder}: no config.json; a Hugging Face folder holds config.json and model.safetensors "
                        f"(from huggingface.co/{example} and the like)")
    try:
        hf = json.loads(config_file.read_text())
    except ValueError as e:
        raise UserError(f"{config_file}: not valid JSON ({e})") from None
    if hf.get("model_type") not in model_types:
        raise UserError(f"{config_file}: model_type {hf.get('model_type')!r} is not one of {', '.join(model_types)}")
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    try:
        if single.is_file():
            return load_file(single), hf
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return {k: v for shard in shards for k, v in load_file(folder / shard).items()}, hf
        if (folder / "pytorch_model.bin").is_file():
            return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True), hf
    except Exception as e:  # as above; also a damaged index.json
        raise UserError(f"{folder}: unreadable weights ({first_line(e)}); download the folder again") from None
    raise UserError(f"{folder}: no model.safetensors next to config.json; download it from the same Hugging Face repo")


# Hugging Face names → official names. transformers < 5 (and every file on the Hub) use the first
# spelling; transformers 5 in memory uses the second (q_proj, gate_proj, ...).
_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.mask_token": "mask_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.register_tokens": "register_tokens",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_HF_BLOCK = {  # name inside encoder.layer.N → (official name inside blocks.N, part of a fused tensor)
    "norm1": ("norm1", None), "norm2": ("norm2", None),
    "attention.attention.query": ("attn.qkv", 0), "attention.q_proj": ("attn.qkv", 0),
    "attention.attention.key": ("attn.qkv", 1), "attention.k_proj": ("attn.qkv", 1),
    "attention.attention.value": ("attn.qkv", 2), "attention.v_proj": ("attn.qkv", 2),
    "attention.output.dense": ("attn.proj", None), "attention.o_proj": ("attn.proj", None),
    "layer_scale1.lambda1": ("ls1.gamma", None), "layer_scale2.lambda1": ("ls2.gamma", None),
    "mlp.fc1": ("mlp.fc1", None), "mlp.fc2": ("mlp.fc2", None),
    "mlp.weights_in": ("mlp.w12", None), "mlp.weights_out": ("mlp.w3", None),
    "mlp.gate_proj": ("mlp.w12", 0), "mlp.up_proj": ("mlp.w12", 1), "mlp.down_proj": ("mlp.w3", None),
}
_HF_BLOCK_KEY = re.compile(r"encoder\.layer\.(\d+)\.(.+?)(\.weight|\.bias|)")


def hf_to_official(state: dict[str, torch.Tensor], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """A Hugging Face Dinov2Model / Dinov2WithRegistersModel state dict in the official layout."""
    out, parts = {}, {}
    for key, tensor in state.items():
        key = key.removeprefix("dinov2.")  # Dinov2For... wrappers
        if key.startswith("classifier."):
            continue
        if key in _HF_TOP:
            out[_HF_TOP[key]] = tensor
            continue
        match = _HF_BLOCK_KEY.fullmatch(key)
        if not match or match[2] not in _HF_BLOCK:
            raise UserError(f"{source}: unexpected key '{key}'; not a Hugging Face DINOv2 checkpoint")
        name, part = _HF_BLOCK[match[2]]
        target = f"blocks.{match[1]}.{name}{match[3]}"
        if part is None:
            out[target] = tensor
        else:
            parts.setdefault(target, {})[part] = tensor
    for target, pieces in parts.items():  # q, k, v → qkv and gate, up → w12, concatenated on the output axis
        if sorted(pieces) != list(range(3 if ".qkv" in target else 2)):
            raise UserError(f"{source}: incomplete tensors for {target}; the checkpoint is damaged")
        out[target] = torch.cat([pieces[i] for i in sorted(pieces)], dim=0)
    if "mask_token" not in out and "cls_token" in out:  # use_mask_token=False checkpoints; unused at inference
        out["mask_token"] = torch.zeros(1, out["cls_token"].shape[-1])
    return out


def to_official_layout(state: dict, source: str) -> dict:
    if any(k.removeprefix("dinov2.").startswith(("embeddings.", "encoder.layer.")) for k in state):
        return hf_to_official(state, source)
    if "cls_token" in state and "pos_embed" in state:
        return state
    raise UserError(f"{source}: neither the official DINOv2 key layout (cls_token, blocks.N...) nor Hugging Face's")


def _structure(state: dict, source: str) -> dict:
    """What a checkpoint holds, read from its tensors."""
    try:
        blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.")}
        return dict(embed_dim=state["cls_token"].shape[-1], depth=len(blocks),
                    num_registers=state["register_tokens"].shape[1] if "register_tokens" in state else 0,
                    ffn="swiglu" if "blocks.0.mlp.w12.weight" in state else "mlp",
                    patch_size=state["patch_embed.proj.weight"].shape[-1],
                    pos_grid=math.isqrt(state["pos_embed"].shape[1] - 1))
    except (KeyError, IndexError, ValueError) as e:
        raise UserError(f"{source}: incomplete DINOv2 checkpoint (no {e})") from None


def _config_structure(config: ViTConfig) -> dict:
    return dict(embed_dim=config.embed_dim, depth=config.depth, num_registers=config.num_registers,
                ffn=config.ffn, patch_size=config.patch_size, pos_grid=config.pos_grid)


def _text(structure: dict) -> str:
    return (f"dim {structure['embed_dim']}, {structure['depth']} blocks, {structure['num_registers']} registers, "
            f"{structure['ffn']} FFN, patch {structure['patch_size']}, {structure['pos_grid']}^2 positions")


def check_matches(held: dict, name: str, config, source: str, structure=None, text=None) -> None:
    """Refuse a checkpoint whose structure (from its tensors) is not the asked backbone's, naming the
    backbone of BACKBONES it is when there is one. structure(config) and text(structure) default to DINOv2's."""
    structure, text = structure or _config_structure, text or _text
    asked = structure(config)
    if held != asked:
        same = [n for n, c in BACKBONES.items() if type(c) is type(config) and structure(c) == held]
        holds = f"{same[0]} ({text(held)})" if same else f"an unknown ViT ({text(held)})"
        raise UserError(f"{source} holds {holds}, but {name} ({text(asked)}) was asked for; "
                        f"choose {same[0] if same else 'the matching backbone'} or pass weights for {name}")


def first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
