"""Stage 2: train a head on a feature cache.

    python -m train_head --cache runs/cache --out runs/train
    python -m train_head --cache runs/cache --out runs/gru --head gru --seq-len 3 --stride 0.25
    torchrun --nproc-per-node 2 -m train_head --cache runs/cache --out runs/ddp
"""
import argparse
from pathlib import Path

from cache.sampler import SamplerSettings
from cache.store import LAST
from data.errors import UserError, run_cli
from data.flags import Renamed
from data.split import SplitSettings
from train_head.heads import KINDS, TOKENS, HeadSettings
from train_head.optim import OptimSettings
from train_head.contract import ControllerSettings
from train_head.train import TrainSettings, parse_kind_weights, train


def parse_layers(text: str) -> tuple[int, ...]:
    """--layers 5,8,last → (5, 8, LAST)."""
    try:
        return tuple(LAST if v.strip() == "last" else int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--layers {text!r}: expected 'last' and/or stored block numbers separated by commas, "
                        f"e.g. 5,8,last") from None


def add_head_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by train_head and train_head.ablate."""
    # --head names the head architecture; --kind (its old name) is an episode label in record/extract/inspect and
    # --kind-weight, so it stays here for one release only, as a deprecated alias
    p.add_argument("--head", "--kind", dest="kind", action=Renamed, choices=KINDS, default=HeadSettings.kind,
                   help="sequence model; --kind is its deprecated old name (default: %(default)s)")
    p.add_argument("--transformer-depth", type=int, default=HeadSettings.depth, help="--head transformer: blocks (default: %(default)s)")
    p.add_argument("--transformer-width", type=int, default=HeadSettings.width,
                   help="--head transformer: channels every token is projected to (default: %(default)s)")
    p.add_argument("--transformer-heads", type=int, default=HeadSettings.heads, help="--head transformer: attention heads (default: %(default)s)")
    p.add_argument("--tokens", choices=TOKENS, default=SamplerSettings.tokens, help="token choice (default: %(default)s)")
    p.add_argument("--layers", type=parse_layers, default=SamplerSettings.layers, metavar="N,M,last",
                   help="blocks whose patch tokens the head reads, side by side on the channel axis: 'last' "
                        "(default) and/or earlier blocks the cache stores (extract_features --layers)")
    p.add_argument("--seq-len", type=int, default=SamplerSettings.seq_len, help="frames per sequence (default: %(default)s)")
    p.add_argument("--stride", type=float, default=SamplerSettings.stride_s,
                   help="seconds between sequence frames (default: %(default)s)")
    p.add_argument("--label-shift", type=float, default=SamplerSettings.label_shift_s,
                   help="predict the keys this many seconds after the last frame: the drive loop's latency "
                        "(default: %(default)s)")
    p.add_argument("--steps", type=int, default=2000, help="training steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=SamplerSettings.batch_size,
                   help="sequences per step, at most the number of training sequences (default: %(default)s)")
    p.add_argument("--lr", type=float, default=OptimSettings.lr, help="peak learning rate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=TrainSettings.seed,
                   help="seed of the head's initialisation, the sampling and the split (default: %(default)s)")
    p.add_argument("--mode", choices=["auto", "ram", "stream"], default="auto",
                   help="ram: load the cache into memory (GPU memory on a GPU); stream: read blocks from disk; auto: "
                        "ram when the cache fits in the free memory with a margin, else stream (default: %(default)s)")
    p.add_argument("--device", default=TrainSettings.device,
                   help="cpu, cuda, cuda:1, ...; auto: the GPU when there is one (default: %(default)s)")
    p.add_argument("--val-fraction", type=float, default=SplitSettings.val_fraction,
                   help="share of the recordings kept for validation, in [0, 1) (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=TrainSettings.eval_every,
                   help="steps between evaluations and checkpoints (default: %(default)s)")
    p.add_argument("--kind-weight", action="append", default=[], metavar="KIND=WEIGHT",
                   help="weight the loss of samples from episodes of KIND (repeatable; e.g. correction=3 counts a "
                        "player's correction 3x); kinds not named weigh 1; stored in the checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in OUT (default: refuse)")


def settings_from_args(args, cache: Path, out: Path) -> TrainSettings:
    return TrainSettings(
        cache=cache, out_dir=out, head=HeadSettings(kind=args.kind, tokens=args.tokens, seq_len=args.seq_len, depth=args.transformer_depth,
                                                   width=args.transformer_width, heads=args.transformer_heads),
        sampler=SamplerSettings(seq_len=args.seq_len, stride_s=args.stride, label_shift_s=args.label_shift,
                                tokens=args.tokens, layers=args.layers, batch_size=args.batch_size, mode=args.mode,
                                seed=args.seed, kind_weights=parse_kind_weights(args.kind_weight)),
        optim=OptimSettings(lr=args.lr, min_lr=args.lr / 10, warmup_steps=min(100, args.steps // 10),
                            max_steps=args.steps),
        split=SplitSettings(val_fraction=args.val_fraction, seed=args.seed),
        eval_every=args.eval_every, device=args.device, seed=args.seed, overwrite=args.overwrite)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m train_head", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--cache", type=Path, required=True, help="feature cache made by python -m extract_features")
    p.add_argument("--out", type=Path, required=True, help="run directory for checkpoints, metrics and curves")
    add_head_arguments(p)
    p.add_argument("--pos-weight", action="store_true", help="weight rare keys up in the loss (backward is rare)")
    p.add_argument("--patience", type=int, default=TrainSettings.patience,
                   help="early stop after N evaluations without improvement (0: never; default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--max-steer", type=float, default=ControllerSettings.max_steer,
                   help="controller default stored in the checkpoint")
    p.add_argument("--steer-gain", type=float, default=ControllerSettings.steer_gain,
                   help="controller default stored in the checkpoint: a/d held for gain · |p(a) - p(d)| of each interval")
    p.add_argument("--proportional-gas", action="store_true",
                   help="controller default stored in the checkpoint: w held for p(w) of each interval "
                        "(for games driven with partial throttle, like the CarRacing expert)")
    args = p.parse_args(argv)
    s = settings_from_args(args, args.cache, args.out)
    s.pos_weight, s.patience, s.resume = args.pos_weight, args.patience, args.resume
    s.controller = ControllerSettings(max_steer=args.max_steer, steer_gain=args.steer_gain,
                                       proportional_gas=args.proportional_gas)
    train(s)


if __name__ == "__main__":
    run_cli(main)
