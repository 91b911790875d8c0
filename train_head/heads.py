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

The seed author's successor (kind "transformer"): every token of every frame projected to `width`
channels, time and space positions added, a learnable CLS token in front, a small pre-norm transformer
(`depth` blocks of `heads` heads),
the CLS token's output → LayerNorm → Linear(4).

A head kind is one class taking HeadSettings, with forward(patch, cls) → (B, 4) logits, entered in
HEADS at the end of this file; the CLI choices, the checkpoint and drive follow from there.
"""
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from data.errors import UserError

TOKENS = ("patches", "cls", "both")


@dataclass
class HeadSettings:
    kind: str = "lstm"  # a key of HEADS: lstm, gru, none (an MLP over the concatenated frame features), transformer
    tokens: str = "patches"  # patches, cls, or both
    grid: tuple[int, int] = (13, 18)  # rows, cols of the patch grid (252x182 px at 14 px patches)
    channels: int = 768  # C of a patch token: 384 ViT-S, 768 ViT-B, k after PCA
    cls_channels: int | None = None  # C of the CLS token when it differs from `channels`
    seq_len: int = 3
    hidden: int = 384  # RNN hidden size (or the width of the "none" mixer)
    mlp_hidden: int = 384  # width of the Linear between the two output LayerNorms
    rnn_bias: bool = False  # the seed's LSTM has no bias
    depth: int = 6  # transformer: blocks
    width: int = 128  # transformer: channels every token is projected to
    heads: int = 4  # transformer: attention heads (width must divide by it)

    def __post_init__(self):
        self.grid = tuple(int(g) for g in self.grid)  # a checkpoint stores it as a list
        if self.kind not in HEADS:
            raise UserError(f"head kind '{self.kind}' is unknown; use one of {', '.join(HEADS)}")
        if self.tokens not in TOKENS:
            raise UserError(f"head tokens '{self.tokens}' is unknown; use one of {', '.join(TOKENS)}")
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise UserError(f"head grid {self.grid} must be two positive numbers (rows, cols)")
        for name in ("channels", "seq_len", "hidden", "mlp_hidden", "depth", "width", "heads"):
            if getattr(self, name) < 1:
                what = "--seq-len" if name == "seq_len" else f"head setting {name}"
                raise UserError(f"{what} {getattr(self, name)}: must be at least 1")
        if self.width % self.heads:
            raise UserError(f"transformer width {self.width} (--transformer-width) must be a multiple of its "
                            f"{self.heads} heads (--transformer-heads)")

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
        b, t = check_tokens(self.s, patch, cls)
        parts = []
        if self.s.uses_patches:
            parts.append(self.cnn(patch.reshape(b * t, *patch.shape[2:])).reshape(b, t, -1))
        if self.s.uses_cls:
            parts.append(cls)
        return torch.cat(parts, dim=-1) if len(parts) == 2 else parts[0]


def check_tokens(s: HeadSettings, patch: torch.Tensor | None, cls: torch.Tensor | None) -> tuple[int, int]:
    """(B, T) of the tokens the settings use; a ValueError says what is missing or misshapen."""
    shapes = []
    for name, x, tail, used in (("patch", patch, (s.grid[0] * s.grid[1], s.channels), s.uses_patches),
                                ("cls", cls, (s.cls_dim,), s.uses_cls)):
        if not used:
            continue
        if x is None:
            raise ValueError(f"head tokens='{s.tokens}' needs {name} tokens, got None")
        if x.ndim != 2 + len(tail) or tuple(x.shape[2:]) != tail:
            want = ", ".join(("B", "T", *map(str, tail)))
            raise ValueError(f"{name} tokens must have shape ({want}), got {tuple(x.shape)}")
        shapes.append(tuple(x.shape[:2]))
    if len(set(shapes)) > 1:
        raise ValueError(f"patch and cls tokens disagree on (B, T): {shapes[0]} vs {shapes[1]}")
    return shapes[0]


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
        feats = self.frames(patch, cls)
        with aten_rnn() if feats.is_cpu and not torch.is_grad_enabled() else nullcontext():
            steps, _ = self.rnn(feats)
        return self.out(steps[:, -1])


@contextmanager
def aten_rnn():
    """PyTorch's own CPU LSTM instead of oneDNN's, which packs the weights anew on every call: the seed's LSTM
    on one sequence of 3 frames took 4-5 ms that way against 0.7-2 (the live loop's call; 32 sequences 6.5
    against 5.2 ms). Inference only: a training step is no faster either way. oneDNN's switch is global, so
    this is for the thread that runs the head (the live loop, validation)."""
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = enabled


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


class TransformerHead(nn.Module):
    """Tokens of all T frames (patches and/or CLS, each projected to `width`) + time and space positions,
    a learnable CLS token in front → pre-norm transformer → CLS output → logits (B, 4). T must be seq_len."""

    def __init__(self, s: HeadSettings):
        super().__init__()
        self.settings = s
        rows, cols = s.grid
        self.patch_proj = nn.Linear(s.channels, s.width) if s.uses_patches else None
        self.cls_proj = nn.Linear(s.cls_dim, s.width) if s.uses_cls else None
        per_frame = (rows * cols if s.uses_patches else 0) + (1 if s.uses_cls else 0)
        self.space = nn.Parameter(torch.randn(per_frame, s.width) * 0.02)  # a frame's CLS token has a place too
        self.time = nn.Parameter(torch.randn(s.seq_len, 1, s.width) * 0.02)
        self.cls_token = nn.Parameter(torch.randn(1, 1, s.width) * 0.02)
        layer = nn.TransformerEncoderLayer(s.width, s.heads, dim_feedforward=4 * s.width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, s.depth, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(s.width), nn.Linear(s.width, 4))

    def forward(self, patch: torch.Tensor | None = None, cls: torch.Tensor | None = None) -> torch.Tensor:
        s = self.settings
        b, t = check_tokens(s, patch, cls)
        tokens = []
        if s.uses_cls:
            tokens.append(self.cls_proj(cls)[:, :, None])
        if s.uses_patches:
            tokens.append(self.patch_proj(patch))
        if t != s.seq_len:
            raise ValueError(f"this head was built for seq_len={s.seq_len}, got {t} frames")
        x = torch.cat(tokens, dim=2) + self.space + self.time  # (B, T, per_frame, width)
        x = torch.cat((self.cls_token.expand(b, -1, -1), x.flatten(1, 2)), dim=1)
        return self.out(self.encoder(x)[:, 0])


# Every head kind, by the name --head takes. Adding one: a class like those above, and a line here.
HEADS: dict[str, type[nn.Module]] = {
    "lstm": RecurrentHead,
    "gru": RecurrentHead,
    "none": ConcatHead,
    "transformer": TransformerHead,
}
KINDS = tuple(HEADS)


def build_head(settings: HeadSettings) -> nn.Module:
    return HEADS[settings.kind](settings)
