"""Stage 1: extract backbone tokens of every recorded frame and augmentation variant into a feature cache.

    python -m extract_features --recordings runs/recordings --cache runs/cache
    python -m extract_features --recordings a b --cache c --backbone dinov2_vits14 --weights random --pca 64
"""
import argparse
from pathlib import Path

from cache.reduce import Reduction
from data.errors import UserError, run_cli
from extract_features.pipeline import ExtractSettings, extract


def parse_shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected K/N, e.g. 1/2") from None
    if not 1 <= k <= n:
        raise UserError(f"--shard {text!r}: K must be between 1 and N")
    return k, n


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m extract_features", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--recordings", nargs="+", type=Path, required=True, metavar="DIR", help="recordings directories")
    p.add_argument("--cache", type=Path, required=True, metavar="DIR", help="feature cache directory")
    p.add_argument("--backbone", default=ExtractSettings.backbone, help="dinov2_vit{s,b,l,g}14[_reg] (default: %(default)s)")
    p.add_argument("--weights", default="official",
                   help="official (torch hub cache / download), a .pth file, a Hugging Face folder, or random")
    p.add_argument("--profile", help="game profile (default: the one the episodes were recorded with)")
    p.add_argument("--dtype", choices=["fp16", "int8"], default="fp16", help="stored token type (default: fp16)")
    p.add_argument("--pca", type=int, metavar="K", help="project tokens to K channels (PCA fitted on clean frames)")
    p.add_argument("--fps", type=float, help="cache frame rate, below the recording rate (default: every frame)")
    p.add_argument("--variants", help="comma-separated augmentation variants (default: all of the profile's)")
    p.add_argument("--seed", type=int, default=0, help="augmentation seed (default: %(default)s)")
    p.add_argument("--block-rows", type=int, default=ExtractSettings.block_rows, help="frames per committed block")
    p.add_argument("--batch-size", type=int, default=ExtractSettings.batch_size, help="backbone batch size")
    p.add_argument("--shard", type=parse_shard, default=(1, 1), metavar="K/N", help="extract only shard K of N")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="bf16 autocast: auto = where it is fast (CUDA GPUs, CPUs with AVX512-BF16 or AMX); "
                        "on elsewhere makes the backbone, and the live loop of any head trained on it, many times slower")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone (GPU)")
    p.add_argument("--refresh", action="store_true", help="re-extract recordings that changed since extraction")
    p.add_argument("--kind", action="append", help="only episodes of this kind (repeatable)")
    args = p.parse_args()
    settings = ExtractSettings(
        recordings=args.recordings, cache=args.cache, backbone=args.backbone, weights=args.weights,
        profile=args.profile, reduction=Reduction(dtype=args.dtype, pca_dim=args.pca, fps=args.fps),
        variants=tuple(args.variants.split(",")) if args.variants else None, augment_seed=args.seed,
        block_rows=args.block_rows, batch_size=args.batch_size, shard=args.shard, device=args.device,
        bf16={"auto": None, "on": True, "off": False}[args.bf16], compile=args.compile, refresh=args.refresh, kinds=tuple(args.kind) if args.kind else None)
    cache = extract(settings)
    print(f"done: {cache.path} (fingerprint {cache.fingerprint})")


if __name__ == "__main__":
    run_cli(main)
