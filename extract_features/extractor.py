"""uint8 RGB frames → backbone tokens: the preprocessing glue around a loaded backbone."""
import torch

from data.errors import UserError
from extract_features.device import fast_bf16
from extract_features.loader import Backbone
from extract_features.preprocess import PreprocessSettings, patch_grid, preprocess
from extract_features.vit_layers import BackboneOutput


class FeatureExtractor:
    """uint8 RGB frames → BackboneOutput on the backbone's device, for stage 1 and the live loop.

    No autograd; bf16 autocast by default where it is fast (fast_bf16: CUDA GPUs, CPUs with AVX512-BF16
    or AMX; bf16=True/False forces it); compile=True wraps the model in torch.compile; layers: earlier blocks
    whose patch tokens come out too (BackboneOutput.layers). Tokens come out float32 (the final LayerNorm
    runs in float32 under autocast).
    """

    def __init__(self, backbone: Backbone, settings: PreprocessSettings, bf16: bool | None = None,
                 compile: bool = False, block: int | None = None, layers: tuple[int, ...] = ()):
        if settings.multiple != backbone.config.patch_size:
            raise UserError(f"preprocess multiple {settings.multiple} differs from the patch size "
                            f"{backbone.config.patch_size} of {backbone.name}; set it to {backbone.config.patch_size}")
        self.backbone, self.settings, self.block, self.layers = backbone, settings, block, tuple(layers)
        self.device = backbone.device
        if bf16 is None:
            bf16 = fast_bf16(self.device)
        self.bf16 = bf16
        self.model = torch.compile(backbone.model) if compile else backbone.model

    def grid(self, h: int, w: int) -> tuple[int, int]:
        """(rows, cols) of patch tokens for frames of h x w."""
        return patch_grid(h, w, self.settings)

    def __call__(self, frames) -> BackboneOutput:
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
            return self.model(preprocess(frames, self.settings, self.device), block=self.block, layers=self.layers)
