"""The backbone's CPU fp32 path against faster options, interleaved in one process: ms/frame and how far
each option's tokens move from fp32 eager. Measures what a CPU without fast bf16 could gain.

    python -m tools.bench.cpu_paths [--backbone dinov2_vits14] [--size 112x168] [--rounds 5] [--compile]

An AVX2-only CPU can be emulated on a newer one (kernels only; caches and clocks stay the machine's):
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 python -m tools.bench.cpu_paths
Options: bf16 autocast (fast only with AVX512-BF16 or AMX), dynamic int8 of every Linear (torch.ao
quantize_dynamic, fbgemm and x86 engines), torch.compile, and a smaller geometry (frames resized to 3/4 of
each side: fewer patches, other tokens).
"""
import argparse
import copy
import time
import warnings

import numpy as np
import torch

from data.errors import UserError, run_cli
from extract_features.device import cpu_features
from extract_features.loader import load_backbone
from tools.bench.backbone import relative_error
from extract_features.preprocess import PreprocessSettings, preprocess


def int8_dynamic(model: torch.nn.Module, engine: str) -> torch.nn.Module:
    torch.backends.quantized.engine = engine
    with warnings.catch_warnings():  # torch.ao's deprecation notices
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)


def options(model: torch.nn.Module, size: tuple[int, int], compile: bool) -> dict:
    """name → (model, preprocessing, quantized engine or None, bf16 autocast)."""
    h, w = size
    smaller = PreprocessSettings(mode="resize", size=(max(14, round(h * 0.75 / 14) * 14), max(14, round(w * 0.75 / 14) * 14)))
    found = {"fp32 eager": (model, PreprocessSettings(), None, False),
             "bf16 autocast": (model, PreprocessSettings(), None, True)}
    engines = torch.backends.quantized.supported_engines
    for engine in ("fbgemm", "x86"):
        if engine in engines:
            found[f"int8 dynamic ({engine})"] = (int8_dynamic(model, engine), PreprocessSettings(), engine, False)
    if compile:
        found["torch.compile"] = (torch.compile(model), PreprocessSettings(), None, False)
    found[f"fp32, frames {smaller.size[1]}x{smaller.size[0]}"] = (model, smaller, None, False)
    return found


def compare(backbone: str, size: tuple[int, int], batches: tuple[int, ...], rounds: int, compile: bool,
            log=print) -> list[dict]:
    """Rows {option, batch, ms_per_frame, speedup, patch_err, cls_err}; speedup is the median of per-round
    ratios to fp32 eager (robust to a machine whose load changes between rounds)."""
    model = load_backbone(backbone, "random", progress=False).model
    frames = np.random.default_rng(0).integers(0, 256, size=(max(batches), *size, 3), dtype=np.uint8)
    found = options(model, size, compile)
    times = {(name, b): [] for name in found for b in batches}
    outs = {}
    with torch.inference_mode():
        for r in range(rounds + 1):  # round 0 warms up (and compiles)
            for b in batches:
                for name, (m, prep, engine, bf16) in found.items():
                    if engine:
                        torch.backends.quantized.engine = engine
                    x = preprocess(frames[:b], prep)
                    start = time.perf_counter()
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        out = m(x)
                    if r:
                        times[(name, b)].append((time.perf_counter() - start) / b * 1000)
                    outs[(name, b)] = out
    rows = []
    for b in batches:
        base, base_ms = outs[("fp32 eager", b)], np.array(times[("fp32 eager", b)])
        for name in found:
            out, ms = outs[(name, b)], np.array(times[(name, b)])
            same = out.patch.shape == base.patch.shape
            rows.append({"option": name, "batch": b, "ms_per_frame": float(np.median(ms)),
                         "speedup": float(np.median(base_ms / ms)),
                         "patch_err": relative_error(out.patch, base.patch) if same else None,
                         "cls_err": relative_error(out.cls, base.cls) if same else None})
    log(f"{backbone} (random weights) at {size[1]}x{size[0]}, CPU {', '.join(cpu_features())}, "
        f"{torch.get_num_threads()} threads, median of {rounds} rounds:")
    log(f"{'option':<28} {'batch':>5} {'ms/frame':>9} {'speed-up':>9}  rel. error patch / CLS")
    for row in rows:
        err = f"{row['patch_err']:.1e} / {row['cls_err']:.1e}" if row["patch_err"] is not None else "other grid"
        log(f"{row['option']:<28} {row['batch']:>5} {row['ms_per_frame']:>9.1f} {row['speedup']:>8.2f}x  {err}")
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.bench.cpu_paths", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--backbone", default="dinov2_vits14", help="backbone, random weights (default: %(default)s)")
    p.add_argument("--size", default="112x168", help="frame HxW in pixels (default: %(default)s, the demo's)")
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default: %(default)s: the live "
                                                    "loop's and a stage-1 batch)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds after a warm-up (default: %(default)s)")
    p.add_argument("--compile", action="store_true", help="also torch.compile (needs a C++ compiler; ~1 min)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    try:
        size = tuple(int(v) for v in args.size.lower().split("x"))
        batches = tuple(int(v) for v in args.batches.split(","))
    except ValueError:
        raise UserError(f"--size {args.size} / --batches {args.batches}: give HxW and comma-separated numbers") from None
    if len(size) != 2 or min(size) < 14 or min(batches) < 1 or args.rounds < 1:
        raise UserError("--size must be HxW of at least 14 px, --batches and --rounds at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    compare(args.backbone, size, batches, args.rounds, args.compile)


if __name__ == "__main__":
    run_cli(main)
