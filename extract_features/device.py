"""Which device and precision to run on: --device, and whether bf16 autocast is fast here."""
import platform

import torch

from data.errors import UserError


def cpu_features() -> list[str]:
    """What this CPU gives torch: the level of its kernels (AVX2, AVX512, ...; ATEN_CPU_CAPABILITY lowers it)
    and its bf16 units (AVX512-BF16, AMX), e.g. ["AVX512", "AVX512-BF16", "AMX"]."""
    found = [torch.backends.cpu.get_cpu_capability()]
    if getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
        found.append("AVX512-BF16")
    if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
        found.append("AMX")
    return found


def cpu_features_text() -> str:
    """cpu_features() for people: "AVX2 kernels, AVX512-BF16, AMX" (units the kernels may not use)."""
    level, *units = cpu_features()
    return ", ".join([f"{level} kernels", *units])


def fast_bf16(device: torch.device | str) -> bool:
    """Whether bf16 autocast is faster than fp32 here: on CUDA GPUs with bf16, and on CPUs whose AVX512
    kernels have AVX512-BF16 or AMX (about 2x for ViT-S/14). Elsewhere bf16 is emulated and many times
    slower (ViT-S/14 at 252x182 on an AVX2-only EPYC: 1254 ms/frame against 155 in fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    found = cpu_features()
    return found[0].startswith("AVX512") and ("AVX512-BF16" in found or "AMX" in found)


def precision_name(bf16: bool, int8: bool = False) -> str:
    return "int8" if int8 else "bf16" if bf16 else "fp32"


def int8_fits(device: torch.device | str) -> bool:
    """Whether dynamic int8 (--int8-backbone) is the backbone's fast path here: on CPUs without AMX, where
    torch has torch.ao. ViT-S/14 at 168x112, one thread: on AVX2 kernels 1.37x fp32's frames/s in batches of
    32, 1.65x one frame at a time; on an AMD EPYC with AVX512-BF16 but no AMX (Zen 4, int8 on its AVX512-VNNI)
    1.28x and 1.85x bf16's. With AMX, bf16 stays. CPUs only."""
    if torch.device(device).type != "cpu" or not dynamic_int8_available():
        return False
    return not fast_bf16(device) or "AMX" not in cpu_features()


def fastest_precision(device: torch.device | str) -> tuple[bool, bool]:
    """(bf16, int8) for the backbone where nothing is asked: int8 where it fits, else bf16 where it is fast."""
    int8 = int8_fits(device)
    return fast_bf16(device) and not int8, int8


def int8_reason(device: torch.device | str) -> str:
    """Why int8 rather than bf16 here, for the demo's first line."""
    return "faster here than bf16 without AMX" if fast_bf16(device) else "bf16 would be several times slower here"


def dynamic_int8_available() -> bool:
    """torch.ao's dynamic quantization, deprecated in favour of torchao and absent from some future torch."""
    return hasattr(getattr(torch.ao, "quantization", None), "quantize_dynamic")


def pick_device(name: str) -> torch.device:
    """--device: auto (CUDA when present, else CPU), cpu, cuda, cuda:N."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device here; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: choose auto, cpu, cuda or cuda:N") from None


def cpu_model() -> str:
    """The CPU's model name, e.g. "Intel(R) Xeon(R) Platinum 8480+"."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
