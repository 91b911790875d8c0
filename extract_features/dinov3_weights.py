"""Where a DINOv3 backbone's weights come from (the --weights flag, as for DINOv2 in weights.py):

    official   the release checkpoint in the torch hub cache ($TORCH_HOME/hub/checkpoints), e.g.
               dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth. DINOv3 downloads are gated: request them at
               https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/ and place the file there
    FILE.pth   a state dict in the official key layout (cls_token, storage_tokens, rope_embed.periods,
               blocks.N.attn.qkv.bias_mask, ...)
    FOLDER     a Hugging Face facebook/dinov3-*-pretrain-lvd1689m folder (config.json + model.safetensors);
               its keys are mapped onto the official ones by hf_to_official
    random     seeded random initialisation, labelled RANDOM
"""
import re
from dataclasses import replace
from pathlib import Path

import torch

from data.errors import UserError
from extract_features.dinov3 import Dinov3Config, key_bias_mask, rope_periods
from extract_features.weights import check_matches, download, read_file, read_hf_folder

OFFICIAL_BASE_URL = "https://dl.fbaipublicfiles.com/dinov3"
REQUEST_URL = "https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/"
HF_MODEL_TYPES = ("dinov3_vit",)
RELEASE_HASHES = {  # the hash suffix of each LVD-1689M checkpoint file, as in dinov3/hub/backbones.py
    "dinov3_vits16": "08c60483", "dinov3_vits16plus": "4057cbaa", "dinov3_vitb16": "73cec8be",
    "dinov3_vitl16": "8aa4cbdd", "dinov3_vith16plus": "7c1da9a5",
}


def official_url(name: str) -> str:
    """dinov3_vitb16 → .../dinov3_vitb16/dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth"""
    if name not in RELEASE_HASHES:
        raise UserError(f"backbone '{name}' has no released weights; use --weights random, a .pth or a Hugging Face folder")
    return f"{OFFICIAL_BASE_URL}/{name}/{name}_pretrain_lvd1689m-{RELEASE_HASHES[name]}.pth"


def hf_repo(name: str) -> str:
    return f"facebook/{name.replace('_', '-')}-pretrain-lvd1689m"


def read_weights(name: str, config: Dinov3Config, weights: str, progress: bool = True) -> tuple[dict, str]:
    """State dict in the official layout, checked against `config`, and a label saying where it came from."""
    path = Path(weights).expanduser()
    if weights == "official":
        url = official_url(name)
        file = url.rsplit("/", 1)[1]
        where = (f"DINOv3 weights are gated: request access at {REQUEST_URL}, download {file} "
                 f"(or the Hugging Face folder {hf_repo(name)})")
        state, label = download(url, progress, where), f"official {file}"
    elif path.is_dir():
        state, hf = read_hf_folder(path, HF_MODEL_TYPES, hf_repo("dinov3_vits16"))
        label = f"Hugging Face folder {path}"
        heads = hf.get("num_attention_heads", 6)  # DINOv3ViTConfig's default
        if heads != config.num_heads:
            raise UserError(f"{path / 'config.json'}: {heads} attention heads, but {name} has {config.num_heads}")
        state = hf_to_official(state, config, label, rope_base=float(hf.get("rope_theta", 100.0)))
    elif path.is_file():
        state, label = read_file(path), str(path)
    else:
        raise UserError(f"--weights {weights}: no such file or folder; use 'official', 'random', "
                        f"a .pth file or a Hugging Face folder (config.json + model.safetensors)")
    state = to_official_layout(state, config, label)
    check_matches(structure_of(state, label), name, config, label, config_structure, describe)
    return state, label


# Hugging Face names (transformers 5 adds "model." before "layer.N.") → official names.
_HF_TOP = {
    "embeddings.cls_token": "cls_token", "embeddings.mask_token": "mask_token",
    "embeddings.register_tokens": "storage_tokens", "embeddings.patch_embeddings.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.bias": "patch_embed.proj.bias", "norm.weight": "norm.weight", "norm.bias": "norm.bias",
}
_HF_BLOCK = {"norm1": "norm1", "norm2": "norm2", "attention.o_proj": "attn.proj", "layer_scale1.lambda1": "ls1.gamma",
             "layer_scale2.lambda1": "ls2.gamma"}
_HF_BLOCK_KEY = re.compile(r"(?:model\.)?layer\.(\d+)\.(.+?)(\.weight|\.bias|)")


def hf_to_official(state: dict[str, torch.Tensor], config: Dinov3Config, source: str = "checkpoint",
                   rope_base: float | None = None) -> dict[str, torch.Tensor]:
    """A Hugging Face DINOv3ViTModel state dict in the official layout. The release's fused qkv gets a zero
    key bias and its bias_mask; rope_embed.periods, which Hugging Face recomputes, is made from the config."""
    gated = any(".mlp.gate_proj." in k for k in state)
    ffn = {"mlp.gate_proj": "mlp.w1", "mlp.up_proj": "mlp.w2", "mlp.down_proj": "mlp.w3"} if gated else \
        {"mlp.up_proj": "mlp.fc1", "mlp.down_proj": "mlp.fc2"}
    out, qkv = {}, {}
    for key, tensor in state.items():
        if key in _HF_TOP:
            out[_HF_TOP[key]] = tensor.reshape(1, -1) if key == "embeddings.mask_token" else tensor
            continue
        match = _HF_BLOCK_KEY.fullmatch(key)
        module = match and (ffn.get(match[2]) or _HF_BLOCK.get(match[2]))
        if match and match[2] in ("attention.q_proj", "attention.k_proj", "attention.v_proj"):
            qkv.setdefault(int(match[1]), {})[(match[2][10], match[3])] = tensor
            continue
        if not module:
            raise UserError(f"{source}: unexpected key '{key}'; not a Hugging Face DINOv3 ViT checkpoint")
        out[f"blocks.{match[1]}.{module}{match[3]}"] = tensor
    for block, parts in qkv.items():
        try:
            out[f"blocks.{block}.attn.qkv.weight"] = torch.cat([parts[(p, ".weight")] for p in "qkv"])
            q_bias, v_bias = parts[("q", ".bias")], parts[("v", ".bias")]
        except KeyError as e:
            raise UserError(f"{source}: block {block} lacks {e.args[0][0]}_proj{e.args[0][1]}; the checkpoint is damaged") from None
        out[f"blocks.{block}.attn.qkv.bias"] = torch.cat([q_bias, torch.zeros_like(q_bias), v_bias])
        out[f"blocks.{block}.attn.qkv.bias_mask"] = key_bias_mask(q_bias.shape[0]).to(q_bias.dtype)
    out["rope_embed.periods"] = rope_periods(config if rope_base is None else replace(config, rope_base=rope_base))
    return out


def to_official_layout(state: dict, config: Dinov3Config, source: str) -> dict:
    if any(k.startswith(("embeddings.", "layer.", "model.layer.")) for k in state):
        return hf_to_official(state, config, source)
    if "cls_token" in state and "storage_tokens" in state:
        # the SAT-493M ViT-L's second CLS norm serves local crops in training only
        return {k: v for k, v in state.items() if not k.startswith("local_cls_norm.")}
    raise UserError(f"{source}: neither the official DINOv3 key layout (cls_token, storage_tokens, blocks.N...) "
                    f"nor Hugging Face's")


def structure_of(state: dict, source: str) -> dict:
    """What a checkpoint holds, read from its tensors."""
    try:
        blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.")}
        swiglu = "blocks.0.mlp.w1.weight" in state
        return dict(embed_dim=state["cls_token"].shape[-1], depth=len(blocks),
                    num_registers=state["storage_tokens"].shape[1] if "storage_tokens" in state else 0,
                    ffn="swiglu" if swiglu else "mlp",
                    ffn_hidden=state[f"blocks.0.mlp.{'w1' if swiglu else 'fc1'}.weight"].shape[0],
                    patch_size=state["patch_embed.proj.weight"].shape[-1],
                    head_dim=4 * state["rope_embed.periods"].shape[0])
    except (KeyError, IndexError, ValueError) as e:
        raise UserError(f"{source}: incomplete DINOv3 checkpoint (no {e})") from None


def config_structure(config: Dinov3Config) -> dict:
    return dict(embed_dim=config.embed_dim, depth=config.depth, num_registers=config.num_registers,
                ffn=config.ffn, ffn_hidden=config.ffn_hidden, patch_size=config.patch_size, head_dim=config.head_dim)


def describe(structure: dict) -> str:
    return (f"dim {structure['embed_dim']}, {structure['depth']} blocks, {structure['num_registers']} registers, "
            f"{structure['ffn']} FFN {structure['ffn_hidden']} wide, patch {structure['patch_size']}, "
            f"head width {structure['head_dim']}")
