"""Heads: cached DINOv2 tokens of a short frame sequence → 4 logits (w, a, s, d) for its last frame.

Every head takes
    patch  float (B, T, P, C)  patch tokens, P = rows * cols in row-major order (DINOv2's order)
    cls    float (B, T, C')    CLS tokens
and passes only what its `tokens` setting uses (the other may be None).

The seed's head (EduardR02/GTA-V-LSTM, model.py), per frame:
    Conv2d(C→32, 5x5) → ReLU → LayerNorm([32, rows, cols]) → Conv2d(32→16, 5x5) → ReLU
    → Conv2d(16→8, 3x3) → ReLU → flatten (8·rows·cols) → LayerNorm
then LSTM(hidden 384, no bias) → last step → LayerNorm → Linear → ReLU → LayerNorm → Linear(4).
Convolutions keep the grid size ('same' padding). "both" appends the raw CLS token to the normed
CNN features; "cls" feeds the CLS token alone (the seed's CLS-only mode, no CNN).
"""
from dataclasses import dataclass

import torch
from torch import nn

from data.errors import UserError

KINDS = ("lstm", "gru", "none")
TOKENS = ("patches", "cls", "both")


@dataclass
class HeadSettings:
    kind: str = "lstm"  # lstm, gru, or none (an MLP over the concatenated frame features)
    tokens: str = "patches"  # patches, cls, or both
    grid: tuple[int, int] = (13, 18)  # rows, cols of the patch grid (252x182 px at 14 px patches)
    channels: int = 768  # C of a patch token: 384 ViT-S, 768 ViT-B, k after PCA
    cls_channels: int | None = None  # C of the CLS token when it differs from `channels`
    seq_len: int = 3
    hidden: int = 384  # RNN hidden size (or the width of the "none" mixer)
    mlp_hidden: int = 384  # width of the Linear between the two output LayerNorms
    rnn_bias: bool = False  # the seed's LSTM has no bias

    def __post_init__(self):
        self.grid = tuple(int(g) for g in self.grid)  # a checkpoint stores it as a list
        if self.kind not in KINDS:
            raise UserError(f"head kind '{self.kind}' is unknown; use one of {', '.join(KINDS)}")
        if self.tokens not in TOKENS:
            raise UserError(f"head tokens '{self.tokens}' is unknown; use one of {', '.join(TOKENS)}")
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise UserError(f"head grid {self.grid} must be two positive numbers (rows, cols)")
        for name in ("channels", "seq_len", "hidden", "mlp_hidden"):
            if getattr(self, name) < 1:
                what = "--seq-len" if name == "seq_len" else f"head setting {name}"
                raise UserError(f"{what} {getattr(self, name)}: must be at least 1")

    @property
    def uses_patches(self) -> bool:
        return self.tokens in ("patches", "both")

    @property
    def uses_cls(self) -> bool:
        return self.tokens in ("cls", "both")

    @property
    def cls_dim(self) -> int:
        return self.cls_channels or self.channels


class PatchCNN(nn.Module):
    """The seed's per-frame CNN: (N, P, C) patch tokens → (N, 8·rows·cols), layer-normed."""

    def __init__(self, channels: int, grid: tuple[int, int]):
        super().__init__()
        self.channels, (self.rows, self.cols) = channels, grid
        self.convs = nn.Sequential(
            nn.Conv2d(channels, 32, 5, padding=2), nn.ReLU(),
            nn.LayerNorm([32, self.rows, self.cols]),
            nn.Conv2d(32, 16, 5, padding=2), nn.ReLU(),
            nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(),
        )
        self.out_dim = 8 * self.rows * self.cols
        self.norm = nn.LayerNorm(self.out_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = tokens.reshape(-1, self.rows, self.cols, self.channels).permute(0, 3, 1, 2)
        return self.norm(self.convs(x).flatten(1))


class FrameEncoder(nn.Module):
    """Per-frame features from the tokens the settings ask for: (B, T, ...) → (B, T, out_dim)."""

    def __init__(self, s: HeadSettings):
        super().__init__()
        self.s = s
        self.cnn = PatchCNN(s.channels, s.grid) if s.uses_patches else None
        self.out_dim = (self.cnn.out_dim if self.cnn else 0) + (s.cls_dim if s.uses_cls else 0)

    def forward(self, patch: torch.Tensor | None, cls: torch.Tensor | None) -> torch.Tensor:
        parts = []
        if self.s.uses_patches:
            rows, cols = self.s.grid
            b, t = self._check(patch, "patch", (rows * cols, self.s.channels))
            parts.append(self.cnn(patch.reshape(b * t, *patch.shape[2:])).reshape(b, t, -1))
        if self.s.uses_cls:
            self._check(cls, "cls", (self.s.cls_dim,))
            parts.append(cls)
        if len(parts) == 2 and parts[0].shape[:2] != parts[1].shape[:2]:
            raise ValueError(f"patch and cls tokens disagree on (B, T): {tuple(parts[0].shape[:2])} "
                             f"vs {tuple(parts[1].shape[:2])}")
        return torch.cat(parts, dim=-1) if len(parts) == 2 else parts[0]

    def _check(self, x: torch.Tensor | None, name: str, tail: tuple[int, ...]) -> tuple[int, int]:
        if x is None:
            raise ValueError(f"head tokens='{self.s.tokens}' needs {name} tokens, got None")
        if x.ndim != 2 + len(tail) or tuple(x.shape[2:]) != tail:
            want = ", ".join(("B", "T", *map(str, tail)))
            raise ValueError(f"{name} tokens must have shape ({want}), got {tuple(x.shape)}")
        return x.shape[0], x.shape[1]


def output_layers(hidden: int, mlp_hidden: int) -> nn.Sequential:
    """The seed's tail after the sequence model: LayerNorm → Linear → ReLU → LayerNorm → Linear(4)."""
    return nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, mlp_hidden), nn.ReLU(),
                         nn.LayerNorm(mlp_hidden), nn.Linear(mlp_hidden, 4))


class RecurrentHead(nn.Module):
    """Frame features → LSTM or GRU → the last step's output → logits (B, 4)."""

    def __init__(self, s: HeadSettings):
        super().__init__()
        self.settings = s
        self.frames = FrameEncoder(s)
        rnn = nn.LSTM if s.kind == "lstm" else nn.GRU
        self.rnn = rnn(self.frames.out_dim, s.hidden, batch_first=True, bias=s.rnn_bias)
        self.out = output_layers(s.hidden, s.mlp_hidden)

    def forward(self, patch: torch.Tensor | None = None, cls: torch.Tensor | None = None) -> torch.Tensor:
        steps, _ = self.rnn(self.frames(patch, cls))
        return self.out(steps[:, -1])


class ConcatHead(nn.Module):
    """No RNN: the T frame features side by side → Linear → ReLU → logits (B, 4). T must be seq_len."""

    def __init__(self, s: HeadSettings):
        super().__init__()
        self.settings = s
        self.frames = FrameEncoder(s)
        self.mix = nn.Sequential(nn.Linear(s.seq_len * self.frames.out_dim, s.hidden), nn.ReLU())
        self.out = output_layers(s.hidden, s.mlp_hidden)

    def forward(self, patch: torch.Tensor | None = None, cls: torch.Tensor | None = None) -> torch.Tensor:
        feats = self.frames(patch, cls)
        if feats.shape[1] != self.settings.seq_len:
            raise ValueError(f"this head was built for seq_len={self.settings.seq_len}, got {feats.shape[1]} frames")
        return self.out(self.mix(feats.flatten(1)))


def build_head(settings: HeadSettings) -> nn.Module:
    return ConcatHead(settings) if settings.kind == "none" else RecurrentHead(settings)
