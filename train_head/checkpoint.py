"""Head checkpoints: written atomically, made only of plain values so that
torch.load(path, weights_only=True) reads them, and tied to the feature cache by its fingerprint.

A checkpoint is a dict:
    format, format_version   "gta-drive-head", 1
    model                    the head's state_dict (CPU tensors)
    settings                 the DriveContract (train_head.contract), dataclasses stored as dicts
    fingerprint              the feature cache's fingerprint it was trained on
    ...                      anything else passed to save_checkpoint (step, optimizer state, PCA, ...)
"""
import dataclasses
from pathlib import Path

import numpy as np
import torch

from data.atomic import save_torch
from data.errors import UserError

FORMAT = "gta-drive-head"
FORMAT_VERSION = 2  # 2: settings hold a DriveContract (train_head.contract); 1 is converted on load


def to_plain(value):
    """Dataclasses → dicts, numpy → tensors / Python scalars, Path → str, tensors → detached CPU;
    anything torch's weights_only loader would refuse raises TypeError."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {to_plain(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [to_plain(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint; convert it to plain values first")


def save_checkpoint(path: str | Path, model_state: dict, settings: dict, fingerprint: str, **extra) -> Path:
    """Write the checkpoint to a temporary file beside `path`, then rename it over `path`: a crash or
    a failed write leaves the previous checkpoint (or none) and no partial file."""
    path = Path(path)
    clash = {"format", "format_version", "model", "settings", "fingerprint"} & extra.keys()
    if clash:
        raise TypeError(f"extra checkpoint entries {sorted(clash)} clash with reserved keys")
    payload = to_plain({"format": FORMAT, "format_version": FORMAT_VERSION, "model": dict(model_state),
                        "settings": settings, "fingerprint": str(fingerprint), **extra})
    return save_torch(path, payload)


def load_checkpoint(path: str | Path, expected_fingerprint: str | None = None,
                    map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with weights_only=True; refuse one trained on another feature cache."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint; check the path or train one with python -m train_head")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable checkpoint ({reason[:200]}); use a file saved by train_head") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path}: not a train_head checkpoint (no format '{FORMAT}'); use a file saved by train_head")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{path}: checkpoint format {ckpt['format_version']} is newer than this tool "
                        f"({FORMAT_VERSION}); update the tool")
    if expected_fingerprint is not None and ckpt.get("fingerprint") != expected_fingerprint:
        raise UserError(f"{path}: trained on feature cache {ckpt.get('fingerprint')} but this cache is "
                        f"{expected_fingerprint}; use a checkpoint trained on this cache or re-extract features "
                        f"with the checkpoint's settings")
    return ckpt
