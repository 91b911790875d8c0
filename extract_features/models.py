"""The backbone architectures and their registry: DINOv2 ViT-S/B/L/g with patch 14, with or without 4
registers, as released by facebookresearch/dinov2 (DINOv3's architecture is in dinov3.py, the layers both
share in vit_layers.py), the raw-patch control, and BACKBONES, every backbone by name.

Parameter names equal the official state dict (cls_token, pos_embed, blocks.N.attn.qkv, ...), so an
official checkpoint loads with strict=True. Putting weights into a model is loader.py's job, finding and
reading checkpoint files weights.py's, running a model on frames extractor.py's.
"""
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from data.errors import UserError
from extract_features.dinov3 import DINOV3_BACKBONES, Dinov3Config, DinoV3
from extract_features.preprocess import PreprocessSettings
from extract_features.vit_layers import BackboneOutput, Block, Mlp, PatchEmbed, outputs, resolve_layers, run_blocks


@dataclass(frozen=True)
class ViTConfig:
    embed_dim: int
    depth: int
    num_heads: int
    ffn: str = "mlp"  # "mlp" (fc1 → GELU → fc2) or "swiglu" (ViT-g: w12 → SiLU gate → w3)
    num_registers: int = 0
    patch_size: int = 14
    img_size: int = 518  # pos_embed covers (img_size / patch_size)^2 patches, 37x37 as released
    mlp_ratio: float = 4.0
    # How pos_embed is resized to other grids. The release: bicubic with scale factors
    # (grid + 0.1) / 37 for the plain models; antialiased bicubic to the exact size for the _reg ones.
    interpolate_offset: float = 0.1
    interpolate_antialias: bool = False
    layer_norm_eps: float = 1e-6

    @property
    def ffn_hidden(self) -> int:
        hidden = int(self.embed_dim * self.mlp_ratio)
        if self.ffn == "swiglu":  # two thirds of the MLP width, rounded up to a multiple of 8
            hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        return hidden

    @property
    def pos_grid(self) -> int:
        return self.img_size // self.patch_size


def _release(embed_dim: int, depth: int, num_heads: int, ffn: str = "mlp", registers: bool = False) -> ViTConfig:
    if registers:
        return ViTConfig(embed_dim, depth, num_heads, ffn, num_registers=4,
                         interpolate_offset=0.0, interpolate_antialias=True)
    return ViTConfig(embed_dim, depth, num_heads, ffn)


BACKBONES: dict[str, ViTConfig | Dinov3Config] = {
    "dinov2_vits14": _release(384, 12, 6),
    "dinov2_vitb14": _release(768, 12, 12),
    "dinov2_vitl14": _release(1024, 24, 16),
    "dinov2_vitg14": _release(1536, 40, 24, "swiglu"),
    "dinov2_vits14_reg": _release(384, 12, 6, registers=True),
    "dinov2_vitb14_reg": _release(768, 12, 12, registers=True),
    "dinov2_vitl14_reg": _release(1024, 24, 16, registers=True),
    "dinov2_vitg14_reg": _release(1536, 40, 24, "swiglu", registers=True),
    # Tiny, for tests and the embedded demo only (random weights; no released checkpoint).
    "vit_tiny_test": ViTConfig(48, 2, 3, img_size=224),
    "vit_tiny_test_reg": ViTConfig(48, 2, 3, num_registers=4, img_size=224,
                                   interpolate_offset=0.0, interpolate_antialias=True),
    # Control, not a backbone: the raw 14x14x3 pixel patches themselves (see RawPatches).
    "raw_patches14": ViTConfig(14 * 14 * 3, 0, 1),
    **DINOV3_BACKBONES,
}
RAW_PATCHES = "raw_patches14"


def preprocess_settings(config: ViTConfig | Dinov3Config, mode: str = "pad") -> PreprocessSettings:
    """The backbone's preprocessing: frames padded (or resized) to multiples of its patch size, ImageNet
    mean/std (both releases' LVD models). 240x180 pads to 252x182 at patch 14, 240x192 at patch 16."""
    return PreprocessSettings(mode=mode, multiple=config.patch_size)


def backbone_config(name: str) -> ViTConfig | Dinov3Config:
    if name not in BACKBONES:
        raise UserError(f"backbone '{name}' is unknown; use one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(n, t, c))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * up)


class DinoV2(nn.Module):
    """(N, 3, H, W) normalised images, H and W multiples of 14 → BackboneOutput after the final LayerNorm."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        if config.ffn not in ("mlp", "swiglu"):
            raise ValueError(f"ffn must be 'mlp' or 'swiglu', not {config.ffn!r}")
        self.config = config
        dim = config.embed_dim
        self.patch_embed = PatchEmbed(dim, config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.pos_grid ** 2, dim))
        if config.num_registers:
            self.register_tokens = nn.Parameter(torch.zeros(1, config.num_registers, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # unused at inference; kept so checkpoints load strictly
        self.blocks = nn.ModuleList(Block(dim, config.layer_norm_eps, Attention(dim, config.num_heads),
                                          (SwiGLU if config.ffn == "swiglu" else Mlp)(dim, config.ffn_hidden))
                                    for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)

    @torch.no_grad()
    def init_weights(self) -> None:
        """The release's initialisation, from the global RNG (random_model seeds it)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.config.num_registers:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def interpolate_pos_embed(self, rows: int, cols: int) -> torch.Tensor:
        """pos_embed (1, 1 + rows * cols, D) for a patch grid, computed like the release (in float32)."""
        grid = self.config.pos_grid
        if rows == cols == grid:
            return self.pos_embed
        pos = self.pos_embed.float()
        patch_pos = pos[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        offset = self.config.interpolate_offset
        if offset:  # the release passes scale factors; the offset keeps floor(grid * factor) == rows
            resize = dict(scale_factor=((rows + offset) / grid, (cols + offset) / grid))
        else:
            resize = dict(size=(rows, cols))
        patch_pos = F.interpolate(patch_pos, mode="bicubic", antialias=self.config.interpolate_antialias, **resize)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat((pos[:, :1], patch_pos), dim=1).to(self.pos_embed.dtype)

    def forward(self, x: torch.Tensor, block: int | None = None, layers: Sequence[int] = ()) -> BackboneOutput:
        """block: return the tokens after this block (0-based, negative counts from the end) instead of
        the last, normed by the final LayerNorm like the release's get_intermediate_layers; layers: earlier
        blocks whose normed patch tokens come out too, in BackboneOutput.layers."""
        n, _, h, w = x.shape
        p = self.config.patch_size
        if h % p or w % p:
            raise ValueError(f"input {h}x{w} is not a multiple of {p}; preprocess frames with extract_features.preprocess")
        stop, kept = resolve_layers(self.config.depth, block, layers)
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(n, -1, -1), x), dim=1)
        x = x + self.interpolate_pos_embed(h // p, w // p).to(x.dtype)
        r = self.config.num_registers
        if r:  # registers get no position embedding and sit between CLS and the patches
            x = torch.cat((x[:, :1], self.register_tokens.expand(n, -1, -1), x[:, 1:]), dim=1)
        x, taken = run_blocks(x, self.blocks, stop, kept, self.norm, prefix=1 + r)
        return outputs(x, r, taken)


class RawPatches(nn.Module):
    """The identity on normalised pixels, cut into 14x14 patches: tokens (N, P, 588), CLS = their mean.

    A control for ablations: what a head learns without any backbone (weights "none").
    """

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.patch = config.patch_size

    def forward(self, x: torch.Tensor, block: int | None = None, layers: Sequence[int] = ()) -> BackboneOutput:
        if layers:
            raise ValueError("raw patches have no blocks to take layers from")
        n, c, h, w = x.shape
        p = self.patch
        tokens = x.float().reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(n, (h // p) * (w // p), c * p * p)
        return BackboneOutput(tokens, tokens.mean(dim=1), tokens.new_zeros(n, 0, c * p * p))


def model_class(config: ViTConfig | Dinov3Config) -> type[DinoV2] | type[DinoV3]:
    return DinoV3 if isinstance(config, Dinov3Config) else DinoV2


def family(config: ViTConfig | Dinov3Config) -> str:
    return "DINOv3" if isinstance(config, Dinov3Config) else "DINOv2"


def random_model(config: ViTConfig | Dinov3Config, seed: int = 0) -> DinoV2 | DinoV3:
    """The release's initialisation from a seed, without touching the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)(config)
        model.init_weights()
    return model
