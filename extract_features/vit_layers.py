"""Pieces shared by the DINOv2 (models.py) and DINOv3 (dinov3.py) ViTs: their output, the patch
embedding, the pre-norm block with LayerScale, the GELU MLP, and the walk through the blocks that keeps
chosen earlier blocks' tokens. Module names are the releases' (patch_embed.proj, norm1, attn, ls1, ...)."""
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class BackboneOutput(NamedTuple):
    patch: torch.Tensor  # (N, P, D), P = rows * cols in row-major order
    cls: torch.Tensor  # (N, D)
    registers: torch.Tensor  # (N, R, D); R = 0 for models without registers
    layers: tuple[torch.Tensor, ...] = ()  # (N, P, D) patch tokens of each earlier block asked for, in that order


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Block(nn.Module):
    """x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))); attention keywords (DINOv3's rope) pass through."""

    def __init__(self, dim: int, eps: float, attn: nn.Module, mlp: nn.Module):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = attn
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = mlp
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor, **attn_kwargs) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), **attn_kwargs))
        return x + self.ls2(self.mlp(self.norm2(x)))


def resolve_layers(depth: int, block: int | None, layers: Sequence[int]) -> tuple[int, list[int]]:
    """(blocks to run, 0-based earlier blocks to keep) for forward(block=..., layers=...); negative
    numbers count from the end. Every kept block must run before the output block."""
    if block is not None and not -depth <= block < depth:
        raise ValueError(f"block {block} does not exist in a {depth}-block model")
    stop = depth if block is None else block % depth + 1
    kept = []
    for layer in layers:
        if not -depth <= layer < depth or layer % depth >= stop - 1:
            raise ValueError(f"layer {layer} is not a block before block {stop - 1} of a {depth}-block model")
        kept.append(layer % depth)
    return stop, kept


def run_blocks(x: torch.Tensor, blocks: nn.ModuleList, stop: int, kept: list[int], norm: nn.Module,
               prefix: int, **block_kwargs) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Blocks 0..stop-1 on x, then the final norm: (all tokens after block stop-1, normed), and the
    normed patch tokens (the prefix of CLS and registers cut off) after each kept block, like the
    releases' get_intermediate_layers(norm=True)."""
    taken = {}
    for i in range(stop):
        x = blocks[i](x, **block_kwargs)
        if i in kept:
            taken[i] = x
    return norm(x), tuple(norm(taken[i])[:, prefix:] for i in kept)


def outputs(x: torch.Tensor, registers: int, layers: tuple[torch.Tensor, ...]) -> BackboneOutput:
    """Normed tokens ordered CLS, registers, patches → BackboneOutput."""
    return BackboneOutput(patch=x[:, 1 + registers:], cls=x[:, 0], registers=x[:, 1:1 + registers], layers=layers)


