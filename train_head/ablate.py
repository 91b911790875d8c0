"""Ablations: train a grid of head settings on one cache with the same steps and seeds, compare them.

    python -m train_head.ablate --cache runs/cache --out runs/ablate --steps 1000 --seeds 0 1

Each row changes one thing from the default head (the seed's: LSTM over 3 patch-token frames with
the label shifted by the loop's latency). Writes OUT/ablation.md, OUT/ablation.png and OUT/results.json.
"""
import argparse
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cache.store import FeatureCache, random_backbone_note
from data.atomic import save_figure, write_json, write_text
from data.errors import UserError, disk_faults, run_cli
from data.flags import Seeds
from train_head.train import TrainSettings, train


@dataclass(frozen=True)
class Variation:
    name: str
    kind: str | None = None
    tokens: str | None = None
    seq_len: int | None = None
    label_shift_s: float | None = None
    variant_weights: tuple[tuple[str, float], ...] | None = None  # e.g. (("clean", 1.0),): no augmentation


def default_grid(label_shift_s: float) -> list[Variation]:
    """The default head, then one change at a time (the shift row only when there is a shift)."""
    grid = [
        Variation("default (lstm, patches, seq 3" + (", shift)" if label_shift_s else ")")),
        Variation("seq 1", seq_len=1),
        Variation("seq 2", seq_len=2),
        Variation("gru", kind="gru"),
        Variation("no rnn (concat)", kind="none"),
        Variation("transformer (the seed's successor)", kind="transformer"),
        Variation("cls only", tokens="cls"),
        Variation("patches + cls", tokens="both"),
    ]
    return grid + [Variation("no label shift", label_shift_s=0.0)] if label_shift_s else grid


def apply_variation(base: TrainSettings, v: Variation, seed: int, out_dir: Path) -> TrainSettings:
    head = replace(base.head, kind=v.kind or base.head.kind)
    sampler = replace(base.sampler, tokens=v.tokens or base.sampler.tokens, seed=seed,
                      seq_len=v.seq_len or base.sampler.seq_len,
                      label_shift_s=base.sampler.label_shift_s if v.label_shift_s is None else v.label_shift_s,
                      variant_weights=v.variant_weights or base.sampler.variant_weights)
    return replace(base, head=head, sampler=sampler, out_dir=out_dir, seed=seed,
                   split=replace(base.split, seed=base.split.seed), resume=False, quiet=True)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")[:40]


def run_grid(base: TrainSettings, grid: list[Variation], seeds: list[int], out: Path, log=print) -> list[dict]:
    """Train every (variation, seed); one result row per variation with mean and spread over seeds."""
    rows = []
    for v in grid:
        runs = []
        for seed in seeds:
            run_dir = out / slug(v.name) / f"seed{seed}"
            best = train(apply_variation(base, v, seed, run_dir))
            runs.append({"seed": seed, "dir": str(run_dir), **{k: best.get(k) for k in best}})
            log(f"{v.name:<40} seed {seed}: val bce {best.get('val_bce', math.nan):.4f}  "
                f"exact {best.get('val_exact_match', math.nan):.3f}")
        rows.append({"name": v.name, "variation": v.__dict__, "runs": runs, **summarize(runs)})
    return rows


def summarize(runs: list[dict]) -> dict:
    out = {}
    for key in ("val_bce", "val_exact_match", "val_ap_w", "val_ap_a", "val_ap_s", "val_ap_d"):
        values = np.array([r[key] if r.get(key) is not None else math.nan for r in runs], dtype=float)
        out[key] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
        out[key + "_std"] = float(np.nanstd(values)) if np.isfinite(values).sum() > 1 else 0.0
    return out


def markdown_table(rows: list[dict], extra: list[tuple[str, str]] = ()) -> str:
    """Columns: val metrics (mean ± std over seeds) and any extra (header, key) columns."""
    cols = [("val BCE ↓", "val_bce"), ("exact match ↑", "val_exact_match"), ("AP w", "val_ap_w"),
            ("AP a", "val_ap_a"), ("AP s", "val_ap_s"), ("AP d", "val_ap_d"), *extra]
    lines = ["| setting | " + " | ".join(h for h, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for row in rows:
        cells = []
        for _, key in cols:
            value, std = row.get(key, math.nan), row.get(key + "_std", 0.0)
            cells.append("–" if value is None or not math.isfinite(value) else
                         f"{value:.3f} ± {std:.3f}" if std else f"{value:.3f}")
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def axis_range(values: np.ndarray, errors: np.ndarray) -> tuple[float, float]:
    """x limits that show the differences between bars: the span of value ± error with a margin (room for
    the printed values on the right), not from 0 (0.427 vs 0.438 would look equal)."""
    shown = np.isfinite(values)
    if not shown.any():
        return 0.0, 1.0
    low = float(np.min(values[shown] - np.nan_to_num(errors[shown])))
    high = float(np.max(values[shown] + np.nan_to_num(errors[shown])))
    span = high - low or abs(high) * 0.1 or 1.0
    return low - 0.15 * span, high + 0.35 * span


def plot(rows: list[dict], out_png: Path, keys=(("val BCE", "val_bce"), ("exact match", "val_exact_match")),
         title: str = ""):
    """Horizontal bars per row (mean ± std), each axis zoomed to its values, which are printed on the bars;
    `title` (e.g. a randomly initialised backbone) above the plots. Returns the figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(keys) + 2, 0.45 * len(rows) + 1.5 + 0.3 * bool(title)))
    names = [r["name"] for r in rows][::-1]
    y = np.arange(len(rows))  # numeric positions: a row without a figure (nan) keeps its place
    for i, (name, key) in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        values = np.array([r.get(key, math.nan) for r in rows][::-1], dtype=float)
        errors = np.array([r.get(key + "_std", 0.0) for r in rows][::-1], dtype=float)
        shown = np.isfinite(values)
        low, high = axis_range(values, errors)
        bars = ax.barh(y[shown], values[shown] - low, left=low, xerr=errors[shown], color="tab:blue", alpha=0.8)
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in values[shown]], padding=3, fontsize=8)
        ax.set_xlim(low, high)
        ax.set_yticks(y, names if i == 0 else [""] * len(y))
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_title(name + ("" if low <= 0 else " (axis not from 0)"))
        ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title, color="tab:red")
    fig.tight_layout()
    save_figure(out_png, fig, dpi=110)
    return fig


def main(argv: list[str] | None = None) -> None:
    from train_head.__main__ import add_head_arguments, settings_from_args

    p = argparse.ArgumentParser(prog="python -m train_head.ablate", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--cache", type=Path, required=True, help="feature cache made by python -m extract_features")
    p.add_argument("--out", type=Path, required=True, help="folder for every run, ablation.md, ablation.png, results.json")
    p.add_argument("--seeds", nargs="+", action=Seeds, default=[0],
                   help="training seeds per setting: 0 1 2, A-B or both (default: 0)")
    add_head_arguments(p)
    args = p.parse_args(argv)
    base = settings_from_args(args, args.cache, args.out)
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out}: is a file; give a folder for the ablation")
    rows = run_grid(base, default_grid(args.label_shift), args.seeds, args.out)
    note = random_backbone_note(FeatureCache.open(args.cache).spec)
    with disk_faults(args.out, kept="every trained run is kept in its folder"):
        args.out.mkdir(parents=True, exist_ok=True)
        table = markdown_table(rows)
        write_text(args.out / "ablation.md", f"{table}\n\nsteps {args.steps}, seeds {args.seeds}, cache {args.cache}\n"
                   + (f"\nnote: {note}\n" if note else ""))
        write_json(args.out / "results.json", [{**row, "note": note} if note else row for row in rows],
                   indent=1, default=str)
        plot(rows, args.out / "ablation.png", title=note)
    print(table)
    print(f"\nwritten: {args.out / 'ablation.md'}, {args.out / 'ablation.png'}")


if __name__ == "__main__":
    run_cli(main)
