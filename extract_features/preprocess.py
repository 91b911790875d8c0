"""uint8 RGB frames → the normalised tensor the backbone takes. Shared by stage 1 and the live loop.

mode "pad" replicates the seed (albumentations PadIfNeeded(value=0) then Normalize): the uint8 frame is
zero-padded, centred, up to the next multiple of 14 (240x180 → 252x182, 240x160 → 252x168) and only
then normalised, so padded pixels are black pixels, (0 - mean) / std per channel, not zeros. An odd
amount of padding puts the extra row/column at the bottom/right, as PadIfNeeded and DINOv2's
CenterPadding do.

mode "resize" resizes (bilinear, antialiased) to `size`, or each side to its nearest multiple of 14.
"""
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from data.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODES = ("pad", "resize")


@dataclass(frozen=True)
class PreprocessSettings:
    mode: str = "pad"  # "pad" (the seed) or "resize"
    multiple: int = 14  # the backbone's patch size
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    size: tuple[int, int] | None = None  # resize only: (height, width); None = nearest multiples

    def __post_init__(self):
        if self.mode not in MODES:
            raise UserError(f"preprocess mode '{self.mode}' is unknown; use one of {', '.join(MODES)}")
        if self.multiple < 1:
            raise UserError(f"preprocess multiple={self.multiple} must be at least 1")
        if self.size is not None and (len(self.size) != 2 or any(s < 1 or s % self.multiple for s in self.size)):
            raise UserError(f"preprocess size {self.size} must be (height, width), each a multiple of {self.multiple}")


def input_size(h: int, w: int, settings: PreprocessSettings) -> tuple[int, int]:
    """(height, width) of the tensor that a frame of h x w becomes."""
    m = settings.multiple
    if settings.mode == "pad":
        return math.ceil(h / m) * m, math.ceil(w / m) * m
    if settings.size is not None:
        return tuple(settings.size)
    return max(1, round(h / m)) * m, max(1, round(w / m)) * m


def patch_grid(h: int, w: int, settings: PreprocessSettings) -> tuple[int, int]:
    """(rows, cols) of backbone patches for a frame of h x w; 180x240 → (13, 18)."""
    th, tw = input_size(h, w, settings)
    return th // settings.multiple, tw // settings.multiple


def preprocess(frames, settings: PreprocessSettings, device=None) -> torch.Tensor:
    """uint8 RGB frames (N, H, W, 3) or one frame (H, W, 3), numpy or torch → float32 (N, 3, H', W')."""
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if x.ndim == 3:
        x = x[None]
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 RGB (N, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    x = x.to(device).permute(0, 3, 1, 2)  # move uint8 first: a quarter of the bytes of float
    h, w = x.shape[-2:]
    th, tw = input_size(h, w, settings)
    if settings.mode == "pad":
        top, left = (th - h) // 2, (tw - w) // 2
        x = F.pad(x, (left, tw - w - left, top, th - h - top), value=0).float()
    else:
        x = x.float()
        if (th, tw) != (h, w):
            x = F.interpolate(x, size=(th, tw), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(settings.mean, device=x.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(settings.std, device=x.device).view(1, 3, 1, 1) * 255
    return ((x - mean) / std).contiguous()
