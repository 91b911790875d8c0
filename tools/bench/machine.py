"""The machine a benchmark runs on: what it is, how to wait for its GPU, how to empty its page cache."""
import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import zarr

from extract_features.device import cpu_features, cpu_model, fast_bf16, precision_name


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Waits for queued GPU work, so a timer stops when the work is done (a no-op on CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def describe(device: torch.device, command: str) -> dict:
    """Device, CPU, versions, date and the command that ran, for the results header."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "device": gpu or "cpu",
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_features": cpu_features(),
        "precision": precision_name(fast_bf16(device)),  # what the figures run in, unless one says otherwise
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "zarr": zarr.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "os": platform.platform(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": commit,
        "load_average_start": load_average(),
        "command": command,
    }


def load_average() -> float | None:
    """Runnable processes over the last minute (other work on the machine slows every figure down)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def drop_page_cache() -> bool:
    """Write dirty pages out and drop the page cache (Linux, as root), so the next read comes from disk.
    False where that is not allowed: reads may then be served from memory."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False
