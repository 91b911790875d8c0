"""DINOv2 ViT-S/B/L/g with patch 14, with or without 4 registers, as released by facebookresearch/dinov2;
the registry of every backbone (DINOv3's architecture is in dinov3.py) and the extractor that runs them.

Parameter names equal the official state dict (cls_token, pos_embed, blocks.N.attn.qkv, ...), so an
official checkpoint loads with strict=True. load_backbone gives a frozen model with its weights;
finding, reading and mapping checkpoint files is weights.py's job, pixels → tensor is preprocess.py's.

    python -m extract_features.backbone --list
    python -m extract_features.backbone --bench [--batch 4] [--iters 3] [--device cuda]
"""
import argparse
import itertools
import platform
import time
from dataclasses import dataclass
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data.errors import UserError, run_cli
from extract_features import dinov3_weights
from extract_features.dinov3 import DINOV3_BACKBONES, Dinov3Config, DinoV3
from extract_features.preprocess import PreprocessSettings, patch_grid, preprocess
from extract_features.vit_layers import BackboneOutput, Block, Mlp, PatchEmbed, outputs, resolve_layers, run_blocks
from extract_features.weights import official_url, read_weights, weights_digest


@dataclass(frozen=True)
class ViTConfig:
    embed_dim: int
    depth: int
    num_heads: int
    ffn: str = "mlp"  # "mlp" (fc1 → GELU → fc2) or "swiglu" (ViT-g: w12 → SiLU gate → w3)
    num_registers: int = 0
    patch_size: int = 14
    img_size: int = 518  # pos_embed covers (img_size / patch_size)^2 patches, 37x37 as released
    mlp_ratio: float = 4.0
    # How pos_embed is resized to other grids. The release: bicubic with scale factors
    # (grid + 0.1) / 37 for the plain models; antialiased bicubic to the exact size for the _reg ones.
    interpolate_offset: float = 0.1
    interpolate_antialias: bool = False
    layer_norm_eps: float = 1e-6

    @property
    def ffn_hidden(self) -> int:
        hidden = int(self.embed_dim * self.mlp_ratio)
        if self.ffn == "swiglu":  # two thirds of the MLP width, rounded up to a multiple of 8
            hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        return hidden

    @property
    def pos_grid(self) -> int:
        return self.img_size // self.patch_size


def _release(embed_dim: int, depth: int, num_heads: int, ffn: str = "mlp", registers: bool = False) -> ViTConfig:
    if registers:
        return ViTConfig(embed_dim, depth, num_heads, ffn, num_registers=4,
                         interpolate_offset=0.0, interpolate_antialias=True)
    return ViTConfig(embed_dim, depth, num_heads, ffn)


BACKBONES: dict[str, ViTConfig | Dinov3Config] = {
    "dinov2_vits14": _release(384, 12, 6),
    "dinov2_vitb14": _release(768, 12, 12),
    "dinov2_vitl14": _release(1024, 24, 16),
    "dinov2_vitg14": _release(1536, 40, 24, "swiglu"),
    "dinov2_vits14_reg": _release(384, 12, 6, registers=True),
    "dinov2_vitb14_reg": _release(768, 12, 12, registers=True),
    "dinov2_vitl14_reg": _release(1024, 24, 16, registers=True),
    "dinov2_vitg14_reg": _release(1536, 40, 24, "swiglu", registers=True),
    # Tiny, for tests and the embedded demo only (random weights; no released checkpoint).
    "vit_tiny_test": ViTConfig(48, 2, 3, img_size=224),
    "vit_tiny_test_reg": ViTConfig(48, 2, 3, num_registers=4, img_size=224,
                                   interpolate_offset=0.0, interpolate_antialias=True),
    # Control, not a backbone: the raw 14x14x3 pixel patches themselves (see RawPatches).
    "raw_patches14": ViTConfig(14 * 14 * 3, 0, 1),
    **DINOV3_BACKBONES,
}
RAW_PATCHES = "raw_patches14"
BENCH_BACKBONES = ("dinov2_vits14", "dinov2_vitb14", "dinov3_vits16", "dinov3_vitb16")


def preprocess_settings(config: ViTConfig | Dinov3Config, mode: str = "pad") -> PreprocessSettings:
    """The backbone's preprocessing: frames padded (or resized) to multiples of its patch size, ImageNet
    mean/std (both releases' LVD models). 240x180 pads to 252x182 at patch 14, 240x192 at patch 16."""
    return PreprocessSettings(mode=mode, multiple=config.patch_size)


def backbone_config(name: str) -> ViTConfig | Dinov3Config:
    if name not in BACKBONES:
        raise UserError(f"backbone '{name}' is unknown; use one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(n, t, c))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * up)


class DinoV2(nn.Module):
    """(N, 3, H, W) normalised images, H and W multiples of 14 → BackboneOutput after the final LayerNorm."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        if config.ffn not in ("mlp", "swiglu"):
            raise ValueError(f"ffn must be 'mlp' or 'swiglu', not {config.ffn!r}")
        self.config = config
        dim = config.embed_dim
        self.patch_embed = PatchEmbed(dim, config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.pos_grid ** 2, dim))
        if config.num_registers:
            self.register_tokens = nn.Parameter(torch.zeros(1, config.num_registers, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # unused at inference; kept so checkpoints load strictly
        self.blocks = nn.ModuleList(Block(dim, config.layer_norm_eps, Attention(dim, config.num_heads),
                                          (SwiGLU if config.ffn == "swiglu" else Mlp)(dim, config.ffn_hidden))
                                    for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)

    @torch.no_grad()
    def init_weights(self) -> None:
        """The release's initialisation, from the global RNG (random_model seeds it)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.config.num_registers:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def interpolate_pos_embed(self, rows: int, cols: int) -> torch.Tensor:
        """pos_embed (1, 1 + rows * cols, D) for a patch grid, computed like the release (in float32)."""
        grid = self.config.pos_grid
        if rows == cols == grid:
            return self.pos_embed
        pos = self.pos_embed.float()
        patch_pos = pos[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        offset = self.config.interpolate_offset
        if offset:  # the release passes scale factors; the offset keeps floor(grid * factor) == rows
            resize = dict(scale_factor=((rows + offset) / grid, (cols + offset) / grid))
        else:
            resize = dict(size=(rows, cols))
        patch_pos = F.interpolate(patch_pos, mode="bicubic", antialias=self.config.interpolate_antialias, **resize)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat((pos[:, :1], patch_pos), dim=1).to(self.pos_embed.dtype)

    def forward(self, x: torch.Tensor, block: int | None = None, layers: Sequence[int] = ()) -> BackboneOutput:
        """block: return the tokens after this block (0-based, negative counts from the end) instead of
        the last, normed by the final LayerNorm like the release's get_intermediate_layers; layers: earlier
        blocks whose normed patch tokens come out too, in BackboneOutput.layers."""
        n, _, h, w = x.shape
        p = self.config.patch_size
        if h % p or w % p:
            raise ValueError(f"input {h}x{w} is not a multiple of {p}; preprocess frames with extract_features.preprocess")
        stop, kept = resolve_layers(self.config.depth, block, layers)
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(n, -1, -1), x), dim=1)
        x = x + self.interpolate_pos_embed(h // p, w // p).to(x.dtype)
        r = self.config.num_registers
        if r:  # registers get no position embedding and sit between CLS and the patches
            x = torch.cat((x[:, :1], self.register_tokens.expand(n, -1, -1), x[:, 1:]), dim=1)
        x, taken = run_blocks(x, self.blocks, stop, kept, self.norm, prefix=1 + r)
        return outputs(x, r, taken)


class RawPatches(nn.Module):
    """The identity on normalised pixels, cut into 14x14 patches: tokens (N, P, 588), CLS = their mean.

    A control for ablations: what a head learns without any backbone (weights "none").
    """

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.patch = config.patch_size

    def forward(self, x: torch.Tensor, block: int | None = None, layers: Sequence[int] = ()) -> BackboneOutput:
        if layers:
            raise ValueError("raw patches have no blocks to take layers from")
        n, c, h, w = x.shape
        p = self.patch
        tokens = x.float().reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(n, (h // p) * (w // p), c * p * p)
        return BackboneOutput(tokens, tokens.mean(dim=1), tokens.new_zeros(n, 0, c * p * p))


def cpu_features() -> list[str]:
    """What this CPU gives torch: the level of its kernels (AVX2, AVX512, ...; ATEN_CPU_CAPABILITY lowers it)
    and its bf16 units (AVX512-BF16, AMX), e.g. ["AVX512", "AVX512-BF16", "AMX"]."""
    found = [torch.backends.cpu.get_cpu_capability()]
    if getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
        found.append("AVX512-BF16")
    if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
        found.append("AMX")
    return found


def cpu_model() -> str:
    """The CPU's model name, for speed figures and the demo's machine line."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


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


def precision_name(bf16: bool) -> str:
    return "bf16" if bf16 else "fp32"


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


@dataclass
class Backbone:
    """A loaded, frozen backbone and what it is (made by load_backbone)."""

    model: nn.Module  # DinoV2, DinoV3 (or RawPatches), eval mode, requires_grad False
    config: ViTConfig | Dinov3Config
    name: str  # key of BACKBONES
    weights_label: str  # for humans and logs; contains "RANDOM" for random weights
    weights_digest: str  # sha256 of the loaded tensors (feature cache fingerprint)

    @property
    def is_random(self) -> bool:
        return "RANDOM" in self.weights_label

    @property
    def device(self) -> torch.device:
        first = next(itertools.chain(self.model.parameters(), self.model.buffers()), None)
        return first.device if first is not None else torch.device("cpu")


def model_class(config: ViTConfig | Dinov3Config) -> type[DinoV2] | type[DinoV3]:
    return DinoV3 if isinstance(config, Dinov3Config) else DinoV2


def family(config: ViTConfig | Dinov3Config) -> str:
    return "DINOv3" if isinstance(config, Dinov3Config) else "DINOv2"


def random_model(config: ViTConfig | Dinov3Config, seed: int = 0) -> DinoV2 | DinoV3:
    """The release's initialisation from a seed, without touching the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)(config)
        model.init_weights()
    return model


def load_backbone(name: str, weights: str = "official", device="cpu", seed: int = 0,
                  progress: bool = True) -> Backbone:
    """A frozen DinoV2 or DinoV3 (eval, requires_grad False) on `device`, labelled, with a digest of its weights.

    weights: "official" (release checkpoint through the torch hub cache), a .pth path, a Hugging Face
    folder, or "random" (seeded by `seed`); see weights.py and dinov3_weights.py.
    """
    config = backbone_config(name)
    if name == RAW_PATCHES:
        model = RawPatches(config)
        return Backbone(model=model, config=config, name=name, weights_label="no backbone: raw 14x14 pixel patches",
                        weights_digest=weights_digest(model))
    if weights == "random":
        model = random_model(config, seed)
        label = f"RANDOM weights (seed {seed}), not {family(config)} features"
    else:
        reader = dinov3_weights.read_weights if isinstance(config, Dinov3Config) else read_weights
        state, label = reader(name, config, weights, BACKBONES, progress)
        with torch.device("meta"):  # no time spent initialising what the checkpoint replaces
            model = model_class(config)(config)
        expected = set(model.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise UserError(f"{label}: not a {name} checkpoint (missing {missing[:3]}, unexpected {unexpected[:3]})")
        try:
            model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
        except RuntimeError as e:
            raise UserError(f"{label}: tensor shapes do not fit {name} ({str(e).strip().splitlines()[-1]})") from None
    model.eval().requires_grad_(False)
    digest = weights_digest(model)
    return Backbone(model=model.to(device), config=config, name=name, weights_label=label, weights_digest=digest)


class FeatureExtractor:
    """uint8 RGB frames → BackboneOutput on the backbone's device, for stage 1 and the live loop.

    No autograd; bf16 autocast by default where it is fast (fast_bf16: CUDA GPUs, CPUs with AVX512-BF16
    or AMX; bf16=True/False forces it); compile=True wraps the model in torch.compile; layers: earlier blocks
    whose patch tokens come out too (BackboneOutput.layers). Tokens come out float32 (the final LayerNorm
    runs in float32 under autocast).
    """

    def __init__(self, backbone: Backbone, settings: PreprocessSettings, bf16: bool | None = None,
                 compile: bool = False, block: int | None = None, layers: tuple[int, ...] = ()):
        if settings.multiple != backbone.config.patch_size:
            raise UserError(f"preprocess multiple {settings.multiple} differs from the patch size "
                            f"{backbone.config.patch_size} of {backbone.name}; set it to {backbone.config.patch_size}")
        self.backbone, self.settings, self.block, self.layers = backbone, settings, block, tuple(layers)
        self.device = backbone.device
        if bf16 is None:
            bf16 = fast_bf16(self.device)
        self.bf16 = bf16
        self.model = torch.compile(backbone.model) if compile else backbone.model

    def grid(self, h: int, w: int) -> tuple[int, int]:
        """(rows, cols) of patch tokens for frames of h x w."""
        return patch_grid(h, w, self.settings)

    def __call__(self, frames) -> BackboneOutput:
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
            return self.model(preprocess(frames, self.settings, self.device), block=self.block, layers=self.layers)


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def time_ms_per_frame(extractor: FeatureExtractor, frames: np.ndarray, iters: int) -> tuple[float, BackboneOutput]:
    """Median over `iters` timed batches (robust to a busy machine), after one warm-up batch."""
    sync = torch.cuda.synchronize if extractor.device.type == "cuda" else lambda: None
    out = extractor(frames)  # warm-up (and compilation)
    times = []
    for _ in range(iters):
        sync()
        start = time.perf_counter()
        out = extractor(frames)
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) / len(frames) * 1000, out


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return float((approx.float() - exact).norm() / exact.norm())


def bench(names: list[str], weights: str, height: int, width: int, batch: int, iters: int,
          device: str, compile: bool) -> None:
    """Print ms/frame in fp32 and bf16 autocast, and the bf16 tokens' error relative to fp32."""
    device = torch.device(device)
    frames = np.random.default_rng(0).integers(0, 256, size=(batch, height, width, 3), dtype=np.uint8)
    print(f"machine: {_machine(device)}")
    print(f"frames {height}x{width}, padded to each backbone's patch size, batch {batch}, median of {iters} "
          f"batches after 1 warm-up{', torch.compile' if compile else ''}")
    print(f"{'backbone':<20} {'patches':>7} {'weights':<44} {'fp32 ms/frame':>14} {'bf16 ms/frame':>14} "
          f"{'bf16 rel.err patch':>19} {'cls':>8}")
    for name in names:
        backbone = load_backbone(name, weights, device=device)
        settings = preprocess_settings(backbone.config)
        grid = "x".join(map(str, patch_grid(height, width, settings)))
        fp32_ms, fp32 = time_ms_per_frame(FeatureExtractor(backbone, settings, False, compile), frames, iters)
        bf16_ms, bf16 = time_ms_per_frame(FeatureExtractor(backbone, settings, True, compile), frames, iters)
        print(f"{name:<20} {grid:>7} {backbone.weights_label[:44]:<44} {fp32_ms:>14.1f} {bf16_ms:>14.1f} "
              f"{relative_error(bf16.patch, fp32.patch):>19.2e} {relative_error(bf16.cls, fp32.cls):>8.2e}")
    if weights == "random":
        print("note: RANDOM weights; speed does not depend on them, the bf16 error with real weights may differ")


def list_backbones() -> None:
    print(f"{'backbone':<20} {'params':>8} {'dim':>5} {'blocks':>6} {'regs':>4}  official weights")
    for name, config in BACKBONES.items():
        with torch.device("meta"):
            params = sum(p.numel() for p in model_class(config)(config).parameters())
        url = (official_url(name) if name.startswith("dinov2_") else dinov3_weights.official_url(name)
               if name.startswith("dinov3_") else "(none: random only)")
        print(f"{name:<20} {params / 1e6:>7.1f}M {config.embed_dim:>5} {config.depth:>6} {config.num_registers:>4}  {url}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m extract_features.backbone",
                                     description="DINOv2 and DINOv3 backbones: list them, or time them on this machine.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--list", action="store_true", help="list backbones, sizes and official weight URLs")
    action.add_argument("--bench", action="store_true", help="ms/frame in fp32 and bf16, and bf16 error vs fp32")
    parser.add_argument("--backbones", nargs="+", default=list(BENCH_BACKBONES), metavar="NAME",
                        help=f"backbones to time (default: {' '.join(BENCH_BACKBONES)})")
    parser.add_argument("--weights", default="random",
                        help="'random' (default; speed does not depend on weights), 'official', a .pth or a HF folder")
    parser.add_argument("--height", type=int, default=180, help="frame height in pixels before padding (default 180)")
    parser.add_argument("--width", type=int, default=240, help="frame width in pixels before padding (default 240)")
    parser.add_argument("--batch", type=int, default=4, help="frames per forward pass (default 4)")
    parser.add_argument("--iters", type=int, default=3, help="timed batches per setting; the median is shown (default 3)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model first")
    args = parser.parse_args(argv)
    if args.list:
        return list_backbones()
    for flag in ("height", "width", "batch", "iters"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} {getattr(args, flag)}: must be at least 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: no CUDA device here; use --device cpu")
    bench(args.backbones, args.weights, args.height, args.width, args.batch, args.iters, args.device, args.compile)


if __name__ == "__main__":
    run_cli(main)
