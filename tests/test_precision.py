"""bf16 where the device is fast at it (CUDA, CPUs with AVX512-BF16 or AMX), fp32 elsewhere: one detection
for stage 1, the bench and the demo; a bf16 checkpoint on a device without fast bf16 is warned about.
Dynamic int8 (--int8-backbone) on CPUs without fast bf16, and a head trained on it drives int8."""
import pytest
import torch

from cache.store import FeatureCache
from data.errors import UserError
from drive.agent import extraction_precision, load_agent
from extract_features.device import (cpu_features, cpu_features_text, fast_bf16, fastest_precision, int8_fits,
                                     precision_name)
from extract_features.extractor import FeatureExtractor
from extract_features.loader import Backbone, load_backbone
from extract_features.pipeline import extract
from extract_features.selection import ExtractSettings
from extract_features.preprocess import PreprocessSettings
from tests.test_agent import make_checkpoint


def fake_cpu(monkeypatch, capability: str, avx512_bf16: bool, amx: bool) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


@pytest.mark.parametrize("capability, avx512_bf16, amx, fast", [
    ("AVX512", True, True, True),
    ("AVX512", True, False, True),
    ("AVX512", False, True, True),
    ("AVX512", False, False, False),  # AVX512 without bf16 units
    ("AVX2", False, False, False),  # an AVX2-only EPYC
    ("AVX2", True, True, False),  # ATEN_CPU_CAPABILITY=avx2 on a bf16 CPU: the kernels are AVX2 ones
])
def test_fast_bf16_on_cpus(monkeypatch, capability, avx512_bf16, amx, fast):
    fake_cpu(monkeypatch, capability, avx512_bf16, amx)
    assert fast_bf16("cpu") is fast
    assert cpu_features() == [capability] + ["AVX512-BF16"] * avx512_bf16 + ["AMX"] * amx
    assert cpu_features_text() == ", ".join([f"{capability} kernels"] + ["AVX512-BF16"] * avx512_bf16 + ["AMX"] * amx)
    backbone = load_backbone("vit_tiny_test", "random", progress=False)
    assert FeatureExtractor(backbone, PreprocessSettings()).bf16 is fast  # stage 1's default follows
    assert FeatureExtractor(backbone, PreprocessSettings(), bf16=not fast).bf16 is not fast  # unless forced


def test_a_bf16_checkpoint_warns_on_a_cpu_without_fast_bf16(tmp_path, monkeypatch):
    ckpt, _ = make_checkpoint(tmp_path, bf16=True)
    lines = []
    fake_cpu(monkeypatch, "AVX2", False, False)
    agent = load_agent(ckpt, device="cpu", log=lines.append)
    assert agent.extractor.bf16  # still bf16: the head was trained on bf16 tokens
    warnings = [line for line in lines if line.startswith("warning")]
    assert len(warnings) == 1 and "bf16" in warnings[0] and "(AVX2 kernels)" in warnings[0] and "--bf16 off" in warnings[0]

    lines.clear()
    fake_cpu(monkeypatch, "AVX512", True, True)
    assert load_agent(ckpt, device="cpu", log=lines.append).extractor.bf16
    assert not [line for line in lines if line.startswith("warning")]


def test_an_fp32_checkpoint_never_warns(tmp_path, monkeypatch):
    ckpt, _ = make_checkpoint(tmp_path, bf16=False)
    lines = []
    fake_cpu(monkeypatch, "AVX2", False, False)
    assert not load_agent(ckpt, device="cpu", log=lines.append).extractor.bf16
    assert not [line for line in lines if line.startswith("warning")]


@pytest.mark.parametrize("capability, avx512_bf16, amx, fits", [
    ("AVX2", False, False, True),  # an AVX2-only EPYC
    ("AVX512", True, False, True),  # AVX512-BF16 without AMX (Zen 4): int8 1.3-1.9x bf16
    ("AVX512", True, True, False),  # AMX: bf16 stays
    ("AVX2", True, True, True),  # ATEN_CPU_CAPABILITY=avx2 on an AMX CPU: bf16 is not fast
])
def test_int8_fits_cpus_without_amx(monkeypatch, capability, avx512_bf16, amx, fits):
    fake_cpu(monkeypatch, capability, avx512_bf16, amx)
    assert int8_fits("cpu") is fits and not int8_fits("cuda")
    bf16, int8 = fastest_precision("cpu")
    assert int8 is fits and bf16 is (not fits)  # never both; on these CPUs one of the two always fits


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_int8_backbone_quantizes_a_copy_and_keeps_the_tokens_close(monkeypatch):
    fake_cpu(monkeypatch, "AVX512", True, True)  # even where bf16 would be the default, int8 replaces it
    backbone = load_backbone("vit_tiny_test", "random", progress=False)
    frames = torch.randint(0, 256, (4, 56, 84, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    fp32 = FeatureExtractor(backbone, PreprocessSettings(), bf16=False)(frames)
    int8 = FeatureExtractor(backbone, PreprocessSettings(), int8=True)
    assert not int8.bf16 and precision_name(int8.bf16, int8.int8) == "int8"
    quantized = [m for m in int8.model.modules() if type(m).__module__.startswith("torch.ao.nn.quantized.dynamic")]
    assert len(quantized) == sum(isinstance(m, torch.nn.Linear) for m in backbone.model.modules()) > 0
    assert all(type(m) is torch.nn.Linear for m in backbone.model.modules() if "Linear" in type(m).__name__)
    out = int8(frames)
    for got, want in ((out.patch, fp32.patch), (out.cls, fp32.cls)):
        assert 0 < relative_error(got, want) < 0.05  # quantized, yet close


def test_int8_backbone_refuses_a_gpu_and_bf16(monkeypatch):
    backbone = load_backbone("vit_tiny_test", "random", progress=False)
    with pytest.raises(UserError, match="--int8-backbone and --bf16 on"):
        FeatureExtractor(backbone, PreprocessSettings(), bf16=True, int8=True)
    monkeypatch.setattr(Backbone, "device", property(lambda self: torch.device("cuda")))
    with pytest.raises(UserError, match="--int8-backbone: dynamic int8 runs on a CPU, the backbone is on cuda"):
        FeatureExtractor(backbone, PreprocessSettings(), bf16=False, int8=True)


def test_an_int8_checkpoint_drives_int8_on_a_cpu_and_fp32_with_a_warning_elsewhere(tmp_path, monkeypatch):
    fake_cpu(monkeypatch, "AVX2", False, False)
    ckpt, cache_dir = make_checkpoint(tmp_path, int8=True)
    assert FeatureCache.open(cache_dir).spec["precision"] == "int8"
    lines = []
    agent = load_agent(ckpt, device="cpu", log=lines.append)
    assert agent.extractor.int8 and not agent.extractor.bf16
    assert not [line for line in lines if line.startswith("warning")]

    lines.clear()
    assert extraction_precision("int8", torch.device("cuda"), ckpt, lines.append) == {"bf16": False, "int8": False}
    assert len(lines) == 1 and "--int8-backbone" in lines[0] and "fp32 on cuda" in lines[0]
    assert extraction_precision("fp32", torch.device("cpu"), ckpt, lines.append) == {"bf16": False, "int8": False}
    assert extraction_precision("int8", torch.device("cpu"), ckpt, lines.append) == {"bf16": False, "int8": True}
    assert len(lines) == 1


@pytest.mark.parametrize("first, second", [(True, False), (False, True)])
def test_a_cache_is_not_continued_in_another_precision(tmp_path, first, second):
    _, cache_dir = make_checkpoint(tmp_path, int8=first)
    again = ExtractSettings(recordings=[tmp_path / "rec"], cache=cache_dir, backbone="vit_tiny_test", weights="random",
                            variants=("clean",), block_rows=16, batch_size=8, int8_backbone=second, progress=False)
    with pytest.raises(UserError, match="differs in precision"):
        extract(again, log=lambda *a: None)  # refused, not mixed with the other precision's tokens


def test_without_torch_ao_quantization_int8_is_not_picked_and_asking_for_it_says_so(monkeypatch):
    fake_cpu(monkeypatch, "AVX2", False, False)
    monkeypatch.delattr(torch.ao.quantization, "quantize_dynamic")
    assert not int8_fits("cpu")  # the demo then runs fp32
    backbone = load_backbone("vit_tiny_test", "random", progress=False)
    with pytest.raises(UserError, match=r"--int8-backbone: torch .* has no torch.ao dynamic quantization"):
        FeatureExtractor(backbone, PreprocessSettings(), int8=True)
