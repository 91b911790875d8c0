"""Stage 1: extract backbone tokens of every recorded frame and augmentation variant into a feature cache.

    python -m extract_features --recordings runs/recordings --cache runs/cache
    python -m extract_features --recordings a b --cache c --backbone dinov2_vits14 --weights random --pca 64
    python -m extract_features --recordings runs/recordings --cache runs/cache-v3 --backbone dinov3_vitb16 --layers 5,8
    python -m extract_features --recordings runs/recordings --cache runs/cache --estimate

--dtype, --pca and --fps default to the game profile's [cache] table (gta5: int8, PCA 64, 20 fps), else
fp16, every channel, every recorded frame.
"""
import argparse
from dataclasses import replace
from pathlib import Path

from cache.reduce import Reduction
from data.errors import UserError, run_cli
from data.flags import Renamed
from extract_features.estimate import OFF, estimate, profile_reduction, reduction_text
from extract_features.pipeline import ExtractSettings, extract, select_episodes
from extract_features.selection import HUD_CHOICES


def parse_shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected K/N, e.g. 1/2") from None
    if not 1 <= k <= n:
        raise UserError(f"--shard {text!r}: K must be between 1 and N")
    return k, n


def number_or_off(kind):
    """An argparse type: a number of this kind, or the word that turns the profile's default off."""
    def parse(text: str):
        return OFF if text.strip().lower() == OFF else kind(text)
    parse.__name__ = kind.__name__  # argparse names the type in its error
    return parse


def parse_layers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--layers {text!r}: expected block numbers separated by commas, e.g. 5,8") from None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m extract_features", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--recordings", nargs="+", type=Path, required=True, metavar="DIR", help="recordings directories")
    p.add_argument("--cache", type=Path, required=True, metavar="DIR", help="feature cache directory")
    p.add_argument("--backbone", default=ExtractSettings.backbone,
                   help="dinov2_vit{s,b,l,g}14[_reg] or dinov3_vit{s,b,l}16, dinov3_vit{s,h}16plus; "
                        "python -m extract_features.loader --list shows all (default: %(default)s)")
    p.add_argument("--layers", type=parse_layers, default=ExtractSettings.layers, metavar="N,M",
                   help="also store the patch tokens of these earlier blocks (0-based), reduced like the last's; "
                        "train_head --layers picks among them")
    p.add_argument("--weights", default="official",
                   help="official (torch hub cache / download), a .pth file, a Hugging Face folder, or random")
    p.add_argument("--game", "--profile", dest="profile", action=Renamed,
                   help="game profile (default: the one the episodes were recorded with); --profile is its deprecated "
                        "old name")
    p.add_argument("--dtype", choices=["fp16", "int8"], help="stored token type (default: the profile's, else fp16)")
    p.add_argument("--pca", type=number_or_off(int), metavar="K", help="project tokens to K channels (PCA fitted "
                   f"on clean frames); {OFF}: every channel (default: the profile's)")
    p.add_argument("--fps", type=number_or_off(float), help="cache frame rate, below the recording rate; "
                   f"{OFF}: every recorded frame (default: the profile's)")
    p.add_argument("--estimate", action="store_true",
                   help="print frames, variants, bytes/frame, total size and free disk, then stop (no backbone run)")
    p.add_argument("--variants", help="comma-separated augmentation variants (default: all of the profile's)")
    p.add_argument("--hud", choices=HUD_CHOICES, default=ExtractSettings.hud,
                   help="keep: the profile's HUD rectangles (the minimap) come out of every augmentation variant as "
                        "recorded, the seed's way; distort: augmented like any other pixels, to measure what keeping "
                        "them is worth (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="augmentation seed (default: %(default)s)")
    p.add_argument("--block-rows", type=int, default=ExtractSettings.block_rows, help="frames per committed block")
    p.add_argument("--batch-size", type=int, default=ExtractSettings.batch_size, help="backbone batch size")
    p.add_argument("--workers", type=int, default=ExtractSettings.workers,
                   help="backbone batches run at once, sharing out torch's CPU threads; on a CPU of few cores, one "
                        "per core keeps every core busy even while other work takes one (default: %(default)s)")
    p.add_argument("--shard", type=parse_shard, default=(1, 1), metavar="K/N", help="extract only shard K of N")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="bf16 autocast: auto = where it is fast (CUDA GPUs, CPUs with AVX512-BF16 or AMX); "
                        "on elsewhere makes the backbone, and the live loop of any head trained on it, many times slower")
    p.add_argument("--int8-backbone", action="store_true",
                   help="run the backbone's Linear layers in dynamic int8 (CPU only): on CPUs without fast bf16 (AVX2 "
                        "only) 1.4x faster than fp32 in batches, tokens within ~2.5 %%; the live loop of any head trained on "
                        "it runs int8 too (not the stored --dtype, which is independent)")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone (GPU)")
    p.add_argument("--refresh", action="store_true", help="re-extract recordings that changed since extraction")
    p.add_argument("--kind", action="append", help="only episodes of this kind (repeatable)")
    p.add_argument("--strict", action="store_true",
                   help="a damaged recording is an error (default: skipped with a warning naming it)")
    args = p.parse_args(argv)
    settings = ExtractSettings(
        recordings=args.recordings, cache=args.cache, backbone=args.backbone, weights=args.weights,
        profile=args.profile, reduction=Reduction(), layers=args.layers,
        variants=tuple(args.variants.split(",")) if args.variants else None, augment_seed=args.seed, hud=args.hud,
        block_rows=args.block_rows, batch_size=args.batch_size, shard=args.shard, workers=args.workers, device=args.device,
        bf16={"auto": None, "on": True, "off": False}[args.bf16], int8_backbone=args.int8_backbone, compile=args.compile, refresh=args.refresh, kinds=tuple(args.kind) if args.kind else None,
        strict=args.strict)
    episodes, profile = select_episodes(settings)
    settings = replace(settings, reduction=profile_reduction(profile, args.dtype, args.pca, args.fps))
    if args.estimate:
        print(estimate(settings, episodes).describe())
        return
    print(f"cache: {reduction_text(settings.reduction)} (profile {profile.name}; --dtype, --pca, --fps override)")
    cache = extract(settings, selected=(episodes, profile))
    print(f"done: {cache.path} (fingerprint {cache.fingerprint})")


if __name__ == "__main__":
    run_cli(main)
