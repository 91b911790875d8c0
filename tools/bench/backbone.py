"""Figure 1: backbone ms/frame in fp32, bf16 autocast and (CPU) dynamic int8 on the profile's 240x180 frames, each padded to
its backbone's patch size (252x182 at 14 px, 240x192 at 16 px), timed by the same helpers as this
module's own table:

    python -m tools.bench.backbone [--backbones ...] [--batch 4] [--iters 3] [--device cuda] [--compile]
"""
import argparse
import time
from dataclasses import dataclass

import numpy as np
import torch

from data.errors import UserError, run_cli
from extract_features.device import cpu_model, dynamic_int8_available
from extract_features.extractor import FeatureExtractor
from extract_features.loader import load_backbone
from extract_features.models import preprocess_settings
from extract_features.preprocess import patch_grid
from extract_features.vit_layers import BackboneOutput

BENCH_BACKBONES = ("dinov2_vits14", "dinov2_vitb14", "dinov3_vits16", "dinov3_vitb16")


@dataclass
class BackboneBench:
    backbones: tuple[str, ...]
    batch: int = 4
    iters: int = 3  # timed batches per setting; the median counts
    height: int = 180  # frames as recorded; each backbone pads them to its patch size
    width: int = 240


def backbone_speed(s: BackboneBench, device: torch.device, log=print) -> dict:
    """{backbone: {fp32_ms_per_frame, bf16_ms_per_frame, bf16_rel_err_patch, bf16_rel_err_cls}, ...}, and on a
    CPU the same for dynamic int8 (int8_ms_per_frame, int8_rel_err_patch, int8_rel_err_cls)."""
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
        line = f"  {name}: fp32 {fp32_ms:.1f} ms/frame, bf16 {bf16_ms:.1f} ms/frame"
        if device.type == "cpu" and dynamic_int8_available():
            int8_ms, int8 = time_ms_per_frame(FeatureExtractor(backbone, settings, int8=True), frames, s.iters)
            results[name].update(int8_ms_per_frame=int8_ms, int8_rel_err_patch=relative_error(int8.patch, fp32.patch),
                                 int8_rel_err_cls=relative_error(int8.cls, fp32.cls))
            line += f", int8 {int8_ms:.1f} ms/frame"
        log(line)
    return {"input": [s.height, s.width], "batch": s.batch, "iters": s.iters, "weights": "random",
            "backbones": results}


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def time_ms_per_frame(extractor: FeatureExtractor, frames: np.ndarray, iters: int) -> tuple[float, BackboneOutput]:
    """Median over `iters` timed batches (robust to a busy machine), after one warm-up batch."""
    sync = torch.cuda.synchronize if extractor.device.type == "cuda" else lambda: None
    out = extractor(frames)  # warm-up (and compilation)
    times = []
    for _ in range(iters):
        sync()
        start = time.perf_counter()
        out = extractor(frames)
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) / len(frames) * 1000, out


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return float((approx.float() - exact).norm() / exact.norm())


def bench(names: list[str], weights: str, height: int, width: int, batch: int, iters: int,
          device: str, compile: bool) -> None:
    """Print ms/frame in fp32 and bf16 autocast, and the bf16 tokens' error relative to fp32."""
    device = torch.device(device)
    frames = np.random.default_rng(0).integers(0, 256, size=(batch, height, width, 3), dtype=np.uint8)
    print(f"machine: {_machine(device)}")
    print(f"frames {height}x{width}, padded to each backbone's patch size, batch {batch}, median of {iters} "
          f"batches after 1 warm-up{', torch.compile' if compile else ''}")
    print(f"{'backbone':<20} {'patches':>7} {'weights':<44} {'fp32 ms/frame':>14} {'bf16 ms/frame':>14} "
          f"{'bf16 rel.err patch':>19} {'cls':>8}")
    for name in names:
        backbone = load_backbone(name, weights, device=device)
        settings = preprocess_settings(backbone.config)
        grid = "x".join(map(str, patch_grid(height, width, settings)))
        fp32_ms, fp32 = time_ms_per_frame(FeatureExtractor(backbone, settings, False, compile), frames, iters)
        bf16_ms, bf16 = time_ms_per_frame(FeatureExtractor(backbone, settings, True, compile), frames, iters)
        print(f"{name:<20} {grid:>7} {backbone.weights_label[:44]:<44} {fp32_ms:>14.1f} {bf16_ms:>14.1f} "
              f"{relative_error(bf16.patch, fp32.patch):>19.2e} {relative_error(bf16.cls, fp32.cls):>8.2e}")
    if weights == "random":
        print("note: RANDOM weights; speed does not depend on them, the bf16 error with real weights may differ")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.backbone",
                                     description="Time DINOv2 and DINOv3 backbones on this machine in fp32 and bf16.")
    parser.add_argument("--backbones", nargs="+", default=list(BENCH_BACKBONES), metavar="NAME",
                        help=f"backbones to time (default: {' '.join(BENCH_BACKBONES)})")
    parser.add_argument("--weights", default="random",
                        help="'random' (default; speed does not depend on weights), 'official', a .pth or a HF folder")
    parser.add_argument("--height", type=int, default=180, help="frame height in pixels before padding (default 180)")
    parser.add_argument("--width", type=int, default=240, help="frame width in pixels before padding (default 240)")
    parser.add_argument("--batch", type=int, default=4, help="frames per forward pass (default 4)")
    parser.add_argument("--iters", type=int, default=3, help="timed batches per setting; the median is shown (default 3)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model first")
    args = parser.parse_args(argv)
    for flag in ("height", "width", "batch", "iters"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} {getattr(args, flag)}: must be at least 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: no CUDA device here; use --device cpu")
    bench(args.backbones, args.weights, args.height, args.width, args.batch, args.iters, args.device, args.compile)


if __name__ == "__main__":
    run_cli(main)
