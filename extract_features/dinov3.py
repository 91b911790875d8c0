"""DINOv3 ViT-S/16, S+/16, B/16, L/16 and H+/16 as released by facebookresearch/dinov3 (LVD-1689M weights).

What differs from DINOv2 (models.py): patch 16; no learned position table but rotary position embeddings
(RoPE) on the patch tokens' queries and keys, from patch-centre coordinates in [-1, 1] per axis, so any
grid works without interpolation; 4 register ("storage") tokens; a key bias that is masked to zero;
LayerNorm eps 1e-5; the SwiGLU of S+ and H+ has three separate linears (w1 gate, w2 up, w3 down).

Parameter and buffer names equal the official state dict (cls_token, storage_tokens, rope_embed.periods,
blocks.N.attn.qkv.bias_mask, ...), so an official checkpoint loads with strict=True; weights are found,
read and mapped by dinov3_weights.py.
"""
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from extract_features.vit_layers import BackboneOutput, Block, LayerScale, Mlp, PatchEmbed, outputs, resolve_layers, run_blocks


@dataclass(frozen=True)
class Dinov3Config:
    embed_dim: int
    depth: int
    num_heads: int
    ffn: str = "mlp"  # "mlp" (fc1 → GELU → fc2) or "swiglu" (w1 → SiLU gate × w2 → w3)
    ffn_ratio: float = 4.0
    num_registers: int = 4
    patch_size: int = 16
    rope_base: float = 100.0
    layer_norm_eps: float = 1e-5
    layerscale_init: float = 1e-5  # the release's initial LayerScale (random weights only)

    def __post_init__(self):
        if self.ffn not in ("mlp", "swiglu"):
            raise ValueError(f"ffn must be 'mlp' or 'swiglu', not {self.ffn!r}")

    @property
    def ffn_hidden(self) -> int:
        hidden = int(self.embed_dim * self.ffn_ratio)
        if self.ffn == "swiglu":  # two thirds of the MLP width, rounded up to a multiple of 8
            d = int(hidden * 2 / 3)
            hidden = d + (-d % 8)
        return hidden

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads


DINOV3_BACKBONES: dict[str, Dinov3Config] = {
    "dinov3_vits16": Dinov3Config(384, 12, 6),
    "dinov3_vits16plus": Dinov3Config(384, 12, 6, "swiglu", ffn_ratio=6.0),
    "dinov3_vitb16": Dinov3Config(768, 12, 12),
    "dinov3_vitl16": Dinov3Config(1024, 24, 16),
    "dinov3_vith16plus": Dinov3Config(1280, 32, 20, "swiglu", ffn_ratio=6.0),
    # Tiny, for tests only (random weights; no released checkpoint).
    "vit3_tiny_test": Dinov3Config(48, 2, 3),
    "vit3_tiny_test_swiglu": Dinov3Config(48, 2, 3, "swiglu", ffn_ratio=6.0),
}


class RopePositionEmbedding(nn.Module):
    """sin, cos (rows * cols, head_dim) for a patch grid, in float32 (the release's rope dtype)."""

    def __init__(self, config: Dinov3Config):
        super().__init__()
        if config.head_dim % 4:
            raise ValueError(f"RoPE needs a head width divisible by 4, not {config.head_dim}")
        self.register_buffer("periods", rope_periods(config), persistent=True)

    def forward(self, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        dd = dict(device=self.periods.device, dtype=torch.float32)
        coords_h = torch.arange(0.5, rows, **dd) / rows  # patch centres, each axis normalised separately
        coords_w = torch.arange(0.5, cols, **dd) / cols
        coords = 2.0 * torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1).flatten(0, 1) - 1.0
        angles = 2 * math.pi * coords[:, :, None] / self.periods.float()[None, None, :]  # (P, 2, head_dim / 4)
        angles = angles.flatten(1, 2).tile(2)  # (P, head_dim): [y freqs, x freqs] twice
        return torch.sin(angles), torch.cos(angles)


def rope_periods(config: Dinov3Config) -> torch.Tensor:
    quarter = config.head_dim // 4
    return config.rope_base ** (2 * torch.arange(quarter, dtype=torch.float32) / (config.head_dim // 2))


def apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate the patch tokens of x (N, heads, tokens, head_dim), computed in float32; the prefix
    (CLS, registers) is left as it is."""
    prefix = x.shape[-2] - sin.shape[-2]
    patches = x[:, :, prefix:].float()
    first, second = patches.chunk(2, dim=-1)
    rotated = patches * cos + torch.cat((-second, first), dim=-1) * sin
    return torch.cat((x[:, :, :prefix], rotated.to(x.dtype)), dim=-2)


class Attention(nn.Module):
    def __init__(self, config: Dinov3Config):
        super().__init__()
        dim = config.embed_dim
        self.num_heads = config.num_heads
        self.qkv = KeyMaskedLinear(dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(n, t, c))


class KeyMaskedLinear(nn.Linear):
    """dim → q, k, v; bias_mask is 1 for the query and value bias, 0 for the key bias (the release trains none)."""

    def __init__(self, dim: int):
        super().__init__(dim, 3 * dim)
        self.register_buffer("bias_mask", key_bias_mask(dim), persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias * self.bias_mask.to(self.bias.dtype))


def key_bias_mask(dim: int) -> torch.Tensor:
    mask = torch.ones(3 * dim)
    mask[dim:2 * dim] = 0
    return mask


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(dim, hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class DinoV3(nn.Module):
    """(N, 3, H, W) normalised images, H and W multiples of 16 → BackboneOutput after the final LayerNorm."""

    def __init__(self, config: Dinov3Config):
        super().__init__()
        self.config, dim = config, config.embed_dim
        self.rope_embed = RopePositionEmbedding(config)  # in place of DINOv2's pos_embed table
        self.patch_embed = PatchEmbed(dim, config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if config.num_registers:
            self.storage_tokens = nn.Parameter(torch.zeros(1, config.num_registers, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # unused at inference; kept so checkpoints load strictly
        self.blocks = nn.ModuleList(Block(dim, config.layer_norm_eps, Attention(config),
                                          (SwiGLU if config.ffn == "swiglu" else Mlp)(dim, config.ffn_hidden))
                                    for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)

    @torch.no_grad()
    def init_weights(self) -> None:
        """The release's initialisation (init_weights_vit), from the global RNG."""
        nn.init.normal_(self.cls_token, std=0.02)
        if self.config.num_registers:
            nn.init.normal_(self.storage_tokens, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, LayerScale):
                nn.init.constant_(module.gamma, self.config.layerscale_init)
        k = 1 / math.sqrt(3 * self.config.patch_size ** 2)
        nn.init.uniform_(self.patch_embed.proj.weight, -k, k)
        nn.init.uniform_(self.patch_embed.proj.bias, -k, k)

    def forward(self, x: torch.Tensor, block: int | None = None, layers: Sequence[int] = ()) -> BackboneOutput:
        """block and layers as DinoV2.forward: the tokens after an earlier block instead of the last, and
        the normed patch tokens of earlier blocks beside them."""
        n, _, h, w = x.shape
        p = self.config.patch_size
        if h % p or w % p:
            raise ValueError(f"input {h}x{w} is not a multiple of {p}; preprocess frames with extract_features.preprocess")
        stop, kept = resolve_layers(self.config.depth, block, layers)
        r = self.config.num_registers
        prefix = [self.cls_token.expand(n, -1, -1)] + ([self.storage_tokens.expand(n, -1, -1)] if r else [])
        x = torch.cat((*prefix, self.patch_embed(x)), dim=1)
        x, taken = run_blocks(x, self.blocks, stop, kept, self.norm, prefix=1 + r, rope=self.rope_embed(h // p, w // p))
        return outputs(x, r, taken)
