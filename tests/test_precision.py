"""bf16 where the device is fast at it (CUDA, CPUs with AVX512-BF16 or AMX), fp32 elsewhere: one detection
for stage 1, the bench and the demo; a bf16 checkpoint on a device without fast bf16 is warned about."""
import pytest
import torch

from drive.agent import load_agent
from extract_features.device import cpu_features, cpu_features_text, fast_bf16
from extract_features.extractor import FeatureExtractor
from extract_features.loader import load_backbone
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
