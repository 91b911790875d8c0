"""uint8 RGB frames → backbone tokens: the preprocessing glue around a loaded backbone."""
import warnings

import torch
from torch import nn

from data.errors import UserError
from extract_features.device import dynamic_int8_available, fast_bf16
from extract_features.loader import Backbone
from extract_features.preprocess import PreprocessSettings, patch_grid, preprocess
from extract_features.vit_layers import BackboneOutput


class FeatureExtractor:
    """uint8 RGB frames → BackboneOutput on the backbone's device, for stage 1 and the live loop.

    No autograd; bf16 autocast by default where it is fast (fast_bf16: CUDA GPUs, CPUs with AVX512-BF16
    or AMX; bf16=True/False forces it); int8=True runs every Linear layer in dynamic int8 instead (CPUs only;
    int8_fits); compile=True wraps the model in torch.compile; layers: earlier blocks whose patch tokens come out
    too (BackboneOutput.layers). Tokens come out float32 (the final LayerNorm runs in float32 under autocast).
    """

    def __init__(self, backbone: Backbone, settings: PreprocessSettings, bf16: bool | None = None,
                 compile: bool = False, block: int | None = None, layers: tuple[int, ...] = (), int8: bool = False):
        if settings.multiple != backbone.config.patch_size:
            raise UserError(f"preprocess multiple {settings.multiple} differs from the patch size "
                            f"{backbone.config.patch_size} of {backbone.name}; set it to {backbone.config.patch_size}")
        self.backbone, self.settings, self.block, self.layers = backbone, settings, block, tuple(layers)
        self.device = backbone.device
        if bf16 is None:
            bf16 = fast_bf16(self.device) and not int8
        if int8 and self.device.type != "cpu":
            raise UserError(f"--int8-backbone: dynamic int8 runs on a CPU, the backbone is on {self.device}; "
                            f"leave it out there (bf16 is the fast path on a GPU)")
        if int8 and bf16:
            raise UserError("--int8-backbone and --bf16 on: choose one precision for the backbone")
        self.bf16, self.int8 = bf16, int8
        model = dynamic_int8(backbone.model) if int8 else backbone.model
        self.model = torch.compile(model) if compile else model

    def grid(self, h: int, w: int) -> tuple[int, int]:
        """(rows, cols) of patch tokens for frames of h x w."""
        return patch_grid(h, w, self.settings)

    def __call__(self, frames) -> BackboneOutput:
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
            return self.model(preprocess(frames, self.settings, self.device), block=self.block, layers=self.layers)


def dynamic_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` whose Linear layers run in int8, activations quantized per batch (PyTorch's dynamic
    quantization); the tokens stay within about 2.5 % of fp32. torch.ao marks it deprecated in favour of
    torchao, a dependency we do not need for one call."""
    if not dynamic_int8_available():
        raise UserError(f"--int8-backbone: torch {torch.__version__} has no torch.ao dynamic quantization; "
                        f"leave --int8-backbone out (fp32)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices, on every call
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
