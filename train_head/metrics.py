"""Validation metrics for the four keys, per-key pos_weight, the metrics JSONL and its curves PNG.

Keys of a metrics record (one JSON object per line of metrics.jsonl; nan is written as null):
    step, time, note (only for a randomly initialised backbone, naming it), and whatever the loop logs; `plot_curves` draws train_loss, val_bce,
    val_exact_match and val_ap_w / val_ap_a / val_ap_s / val_ap_d.
"""
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score, f1_score

from data.atomic import save_figure, write_jsonl
from data.errors import UserError
from data.labels import KEYS


def _numpy(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def pos_weight_from_labels(labels, max_weight: float = 10.0) -> torch.Tensor:
    """BCE pos_weight per key = negatives / positives, clamped to [1, max_weight].

    Only rare keys (backward) are weighted up; a key never pressed gets 1 (it has no positive term).
    """
    y = _numpy(labels).astype(bool)
    if y.ndim != 2 or y.shape[1] != 4:
        raise ValueError(f"labels must have shape (N, 4), got {y.shape}")
    pos = y.sum(axis=0).astype(np.float64)
    neg = len(y) - pos
    weight = np.where(pos > 0, neg / np.maximum(pos, 1), 1.0)
    return torch.tensor(np.clip(weight, 1.0, max_weight), dtype=torch.float32)


def val_metrics(logits, labels, prefix: str = "val_") -> dict[str, float]:
    """BCE, exact-match accuracy (all four keys right at p > 0.5, the seed's metric), and per key the
    average precision and F1 at 0.5. A key that never occurs in `labels` gets nan for AP and F1."""
    z, y = _numpy(logits).astype(np.float64), _numpy(labels).astype(np.int64)
    if z.shape != y.shape or z.ndim != 2 or z.shape[1] != 4 or len(z) == 0:
        raise ValueError(f"need logits and labels of the same shape (N>0, 4), got {z.shape} and {y.shape}")
    # numerically stable BCE with logits: max(z, 0) - z*y + log(1 + exp(-|z|))
    bce = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    pred = (z > 0).astype(np.int64)
    out = {f"{prefix}bce": float(bce.mean()), f"{prefix}exact_match": float((pred == y).all(axis=1).mean())}
    for k, key in enumerate(KEYS):
        present = y[:, k].any()
        out[f"{prefix}ap_{key}"] = float(average_precision_score(y[:, k], z[:, k])) if present else math.nan
        out[f"{prefix}f1_{key}"] = float(f1_score(y[:, k], pred[:, k], zero_division=0.0)) if present else math.nan
    return out


def _plain(value):
    """JSON-ready: nan/inf → None, numpy and torch scalars → Python numbers."""
    if isinstance(value, (torch.Tensor, np.generic)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: str | Path) -> list[dict]:
    """All complete records of a metrics JSONL (a line cut off by a crash is skipped)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: no such metrics file; train first (python -m train_head)") from None
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


class MetricsLog:
    """Appends one JSON object per line to metrics.jsonl, flushed after each record.

    A fresh run starts an empty file; a resumed run (resume_step given) keeps the records up to
    that step and drops later ones, which the resumed run will write again.
    """

    def __init__(self, path: str | Path, resume_step: int | None = None, note: str = ""):
        self.path = Path(path)
        self.note = {"note": note} if note else {}  # e.g. a randomly initialised backbone, in every record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
        write_jsonl(self.path, kept)
        self._file = open(self.path, "a")

    def log(self, step: int, **values) -> dict:
        record = {"step": int(step), "time": round(time.time(), 3), **{k: _plain(v) for k, v in values.items()},
                  **self.note}
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()
        return record

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in records if key in r]
    return [s for s, _ in pts], [math.nan if v is None else v for _, v in pts]


def plot_curves(jsonl: str | Path, out_png: str | Path) -> Path:
    """Train/val loss, val exact-match and per-key val AP over steps, as one PNG (written atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg without touching pyplot's global backend
    from matplotlib.figure import Figure

    records = read_metrics(jsonl)
    if not any("train_loss" in r or "val_bce" in r for r in records):
        raise UserError(f"{jsonl}: no train_loss or val_bce records to plot; train for at least one eval interval")
    fig = Figure(figsize=(14, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    loss, match, ap = fig.subplots(1, 3)
    for key, label in (("train_loss", "train"), ("val_bce", "val")):
        steps, values = _series(records, key)
        if steps:
            loss.plot(steps, values, label=label, marker="." if label == "val" else None)
    loss.set(title="BCE loss", xlabel="step", yscale="log")
    loss.legend()
    match.plot(*_series(records, "val_exact_match"), marker=".")
    match.set(title="val exact match (all 4 keys)", xlabel="step", ylim=(0, 1))
    for key in KEYS:
        steps, values = _series(records, f"val_ap_{key}")
        if steps:
            ap.plot(steps, values, label=key, marker=".")
    ap.set(title="val average precision per key", xlabel="step", ylim=(0, 1))
    if ap.has_data():
        ap.legend()
    for ax in (loss, match, ap):
        ax.grid(alpha=0.3)
    notes = {r["note"] for r in records if r.get("note")}
    if notes:
        fig.suptitle("; ".join(sorted(notes)), color="tab:red")
    return save_figure(out_png, fig)
