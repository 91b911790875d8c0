"""`--mode auto`: load the cache into memory (ram) only when it fits in what is free there, else stream it.

On a GPU the cache is loaded into GPU memory through host memory, so both must hold it. Loading stacks a
second copy for a moment, and the model, optimiser and batches need room too: hence the margin.
"""
import ctypes
import os
import sys
from pathlib import Path

import torch

RAM_MARGIN = 0.5  # use RAM mode only when the cache takes at most this share of the free memory
GB = 1e9


def host_free_bytes(platform: str = sys.platform, meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Memory the OS can hand out now without swapping (None where it cannot be asked)."""
    if platform.startswith("linux") and meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    if platform == "win32":
        return _windows_available_phys()
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _windows_available_phys() -> int | None:
    class MEMORYSTATUSEX(ctypes.Structure):  # sysinfoapi.h
        _fields_ = [("dwLength", ctypes.c_uint32), ("dwMemoryLoad", ctypes.c_uint32),
                    ("ullTotalPhys", ctypes.c_uint64), ("ullAvailPhys", ctypes.c_uint64),
                    ("ullTotalPageFile", ctypes.c_uint64), ("ullAvailPageFile", ctypes.c_uint64),
                    ("ullTotalVirtual", ctypes.c_uint64), ("ullAvailVirtual", ctypes.c_uint64),
                    ("ullAvailExtendedVirtual", ctypes.c_uint64)]

    status = MEMORYSTATUSEX(dwLength=ctypes.sizeof(MEMORYSTATUSEX))  # must be set before the call
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
        return None
    return int(status.ullAvailPhys)


def free_bytes(device: torch.device) -> int | None:
    """Free memory where RAM mode would put the cache: the smaller of the GPU's and the host's for a GPU."""
    host = host_free_bytes()
    if device.type != "cuda":
        return host
    gpu = torch.cuda.mem_get_info(device)[0]
    return gpu if host is None else min(gpu, host)


def choose_mode(needed: int, device: torch.device, limit: int | None = None) -> tuple[str, str]:
    """('ram' or 'stream', why) for a cache whose RAM mode holds `needed` bytes; limit: the free bytes to
    assume instead of asking the device (tests)."""
    free = limit if limit is not None else free_bytes(device)
    where = "GPU" if device.type == "cuda" else "RAM"
    if free is None:
        return "stream", f"mode auto: free {where} unknown; streaming the cache from disk (stream)"
    if needed <= RAM_MARGIN * free:
        return "ram", (f"mode auto: the cache's {needed / GB:.2f} GB fit in {where} ({free / GB:.2f} GB free): "
                       f"loading it (ram)")
    return "stream", (f"mode auto: the cache's {needed / GB:.2f} GB exceed {RAM_MARGIN:.0%} of the {free / GB:.2f} GB "
                      f"of free {where}: streaming it from disk (stream)")
