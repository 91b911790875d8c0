"""Reductions of backbone tokens before they are cached: fp16, int8 with per-token scales, PCA.

The same projection runs in stage 2 and in the live loop, so it is stored with the cache and copied
into every checkpoint.
"""
from dataclasses import asdict, dataclass

import numpy as np
import torch

from cache.buffers import empty_tensor
from data.errors import UserError, require


@dataclass(frozen=True)
class Reduction:
    dtype: str = "fp16"  # "fp16" or "int8" (per-token absmax scale)
    pca_dim: int | None = None  # project the token channel to this many dims (fitted on clean frames)
    pca_frames: int = 256  # frames sampled to fit the PCA
    fps: float | None = None  # cache frame rate; None keeps every recorded frame

    def __post_init__(self):
        if self.dtype not in ("fp16", "int8"):
            raise UserError(f"--dtype {self.dtype}: choose fp16 or int8")
        if self.pca_dim is not None and self.pca_dim < 1:
            raise UserError(f"--pca {self.pca_dim}: must be a positive number of dimensions")
        if self.fps is not None:
            require(0 < self.fps <= 1000, "--fps", self.fps, "a cache frame rate above 0 (frames per second, at most 1000)")

    def describe(self) -> dict:
        return asdict(self)


@dataclass
class Projection:
    """PCA of the token channel: x -> (x - mean) @ components.T"""

    mean: torch.Tensor  # (C,)
    components: torch.Tensor  # (k, C)

    @classmethod
    def fit(cls, tokens: np.ndarray, dim: int, seed: int = 0) -> "Projection":
        from sklearn.decomposition import PCA

        tokens = tokens.reshape(-1, tokens.shape[-1]).astype(np.float32)
        if dim > min(tokens.shape):
            raise UserError(f"--pca {dim}: larger than the {tokens.shape[-1]} token channels "
                            f"or the {len(tokens)} sampled tokens")
        pca = PCA(n_components=dim, svd_solver="randomized", random_state=seed).fit(tokens)
        return cls(torch.from_numpy(pca.mean_.astype(np.float32)), torch.from_numpy(pca.components_.astype(np.float32)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean, comp = self.mean.to(x.device, torch.float32), self.components.to(x.device, torch.float32)
        return (x.float() - mean) @ comp.T

    def explained(self, tokens: np.ndarray) -> float:
        """Share of the tokens' variance the projection keeps."""
        x = torch.from_numpy(tokens.reshape(-1, tokens.shape[-1]).astype(np.float32))
        centred = x - self.mean
        return float((self(x) ** 2).sum() / (centred ** 2).sum())


def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token absmax: (..., C) float -> (..., C) int8 and (...,) fp16 scales. Error <= scale / 2."""
    scale = x.float().abs().amax(dim=-1).clamp_min(1e-8) / 127.0
    scale = scale.half()  # stored precision; quantize with it so dequantization matches exactly
    q = torch.round(x.float() / scale.float().unsqueeze(-1)).clamp_(-127, 127).to(torch.int8)
    return q, scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """float32 tokens q · scale; into `out` (float32, q's shape) when given."""
    out = q.to(torch.float32, copy=True) if out is None else out.copy_(q)  # never scales q itself
    return out.mul_(scale.float().unsqueeze(-1))


def reduce_tokens(patch: torch.Tensor, reduction: Reduction, projection: Projection | None) -> dict[str, np.ndarray]:
    """Backbone patch tokens (N, P, C) -> the arrays stored in the cache ('patch', and 'scale' for int8)."""
    if projection is not None:
        patch = projection(patch)
    if reduction.dtype == "int8":
        q, scale = quantize_int8(patch)
        return {"patch": q.cpu().numpy(), "scale": scale.cpu().numpy()}
    return {"patch": patch.half().cpu().numpy()}


def restore_tokens(stored: dict[str, np.ndarray | torch.Tensor]) -> torch.Tensor:
    """The inverse of reduce_tokens up to rounding: float32 (..., P, C') tokens (still projected), on the
    stored tokens' device; in host memory on huge pages, where converting is cheaper than a fresh buffer."""
    patch = torch.as_tensor(stored["patch"])
    tokens = empty_tensor(patch.shape, torch.float32, patch.device)
    if "scale" in stored:
        return dequantize_int8(patch, torch.as_tensor(stored["scale"], device=patch.device), out=tokens)
    return tokens.copy_(patch)
