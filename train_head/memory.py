"""`--mode auto`: load the cache into memory (ram) only when it fits in what is free there, else stream it.

On a GPU the cache is loaded into GPU memory through host memory, so both must hold it, with margins.
"""
import ctypes
import os
import sys
from pathlib import Path

import torch

from extract_features.estimate import size_text

HOST_MARGIN = 0.5  # loading builds the arrays beside their parts: about twice their size at the peak
GPU_MARGIN = 0.75  # the rest of the GPU's free memory: model, optimiser state, batches, activations


class MEMORYSTATUSEX(ctypes.Structure):  # sysinfoapi.h
    _fields_ = [("dwLength", ctypes.c_uint32), ("dwMemoryLoad", ctypes.c_uint32),
                ("ullTotalPhys", ctypes.c_uint64), ("ullAvailPhys", ctypes.c_uint64),
                ("ullTotalPageFile", ctypes.c_uint64), ("ullAvailPageFile", ctypes.c_uint64),
                ("ullTotalVirtual", ctypes.c_uint64), ("ullAvailVirtual", ctypes.c_uint64),
                ("ullAvailExtendedVirtual", ctypes.c_uint64)]


def host_free_bytes(platform: str = sys.platform, meminfo: Path = Path("/proc/meminfo"),
                    kernel32=None) -> int | None:
    """Memory the OS can hand out now without swapping (None where it cannot be asked). kernel32: the
    Windows API, injectable for tests."""
    if platform.startswith("linux") and meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    if platform == "win32":
        return _windows_available_phys(kernel32 or ctypes.windll.kernel32)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _windows_available_phys(kernel32) -> int | None:
    """GlobalMemoryStatusEx's ullAvailPhys: the standby, free and zero page lists."""
    status = MEMORYSTATUSEX(dwLength=ctypes.sizeof(MEMORYSTATUSEX))  # must be set before the call
    if not kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
        return None
    return int(status.ullAvailPhys)


def budgets(device: torch.device, limit: int | None = None) -> list[tuple[str, int | None, float]]:
    """(where, free bytes, share usable) for each memory that ram mode fills; limit: the free bytes to assume
    instead of asking (tests)."""
    host = ("RAM", limit if limit is not None else host_free_bytes(), HOST_MARGIN)
    if device.type != "cuda":
        return [host]
    gpu = limit if limit is not None else torch.cuda.mem_get_info(device)[0]
    return [("GPU memory", gpu, GPU_MARGIN), host]


def choose_mode(needed: int, device: torch.device, limit: int | None = None) -> tuple[str, str]:
    """('ram' or 'stream', why) for a cache whose ram mode holds `needed` bytes."""
    for where, free, share in budgets(device, limit):
        if free is None:
            return "stream", f"mode auto: free {where} unknown; streaming the cache from disk (stream)"
        if needed > share * free:
            return "stream", (f"mode auto: the cache's {size_text(needed)} exceed {share:.0%} of the "
                              f"{size_text(free)} of free {where}: streaming it from disk (stream)")
    room = ", ".join(f"{size_text(free)} free {where}" for where, free, _ in budgets(device, limit))
    return "ram", f"mode auto: the cache's {size_text(needed)} fit ({room}): loading it (ram)"
