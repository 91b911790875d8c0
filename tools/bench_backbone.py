"""Figure 1: backbone ms/frame in fp32 and bf16 autocast on the profile's 240x180 frames, each padded to
its backbone's patch size (252x182 at 14 px, 240x192 at 16 px), timed by the same helpers as
`python -m extract_features.backbone --bench`."""
from dataclasses import dataclass

import numpy as np
import torch

from extract_features.backbone import FeatureExtractor, load_backbone, preprocess_settings, relative_error, time_ms_per_frame
from extract_features.preprocess import patch_grid


@dataclass
class BackboneBench:
    backbones: tuple[str, ...]
    batch: int = 4
    iters: int = 3  # timed batches per setting; the median counts
    height: int = 180  # frames as recorded; each backbone pads them to its patch size
    width: int = 240


def backbone_speed(s: BackboneBench, device: torch.device, log=print) -> dict:
    """{backbone: {fp32_ms_per_frame, bf16_ms_per_frame, bf16_rel_err_patch, bf16_rel_err_cls}, ...}"""
    frames = np.random.default_rng(0).integers(0, 256, size=(s.batch, s.height, s.width, 3), dtype=np.uint8)
    results = {}
    for name in s.backbones:
        backbone = load_backbone(name, "random", device=device, progress=False)
        settings = preprocess_settings(backbone.config)
        fp32_ms, fp32 = time_ms_per_frame(FeatureExtractor(backbone, settings, bf16=False), frames, s.iters)
        bf16_ms, bf16 = time_ms_per_frame(FeatureExtractor(backbone, settings, bf16=True), frames, s.iters)
        results[name] = {"grid": list(patch_grid(s.height, s.width, settings)), "fp32_ms_per_frame": fp32_ms, "bf16_ms_per_frame": bf16_ms,
                         "bf16_rel_err_patch": relative_error(bf16.patch, fp32.patch),
                         "bf16_rel_err_cls": relative_error(bf16.cls, fp32.cls)}
        log(f"  {name}: fp32 {fp32_ms:.1f} ms/frame, bf16 {bf16_ms:.1f} ms/frame")
    return {"input": [s.height, s.width], "batch": s.batch, "iters": s.iters, "weights": "random",
            "backbones": results}
