"""A frozen backbone with its weights: the model from models.py, filled from weights.py's (DINOv2) or
dinov3_weights.py's (DINOv3) reader, labelled and fingerprinted.

    python -m extract_features.loader --list     backbones, sizes and official weight URLs
"""
import argparse
import itertools
from dataclasses import dataclass

import torch
from torch import nn

from data.errors import UserError, run_cli
from extract_features import dinov3_weights
from extract_features.dinov3 import Dinov3Config
from extract_features.models import BACKBONES, RAW_PATCHES, RawPatches, ViTConfig, backbone_config, family, model_class, random_model
from extract_features.weights import official_url, read_weights, weights_digest


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
        state, label = reader(name, config, weights, progress)
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


def list_backbones() -> None:
    print(f"{'backbone':<20} {'params':>8} {'dim':>5} {'blocks':>6} {'regs':>4}  official weights")
    for name, config in BACKBONES.items():
        with torch.device("meta"):
            params = sum(p.numel() for p in model_class(config)(config).parameters())
        url = (official_url(name) if name.startswith("dinov2_") else dinov3_weights.official_url(name)
               if name.startswith("dinov3_") else "(none: random only)")
        print(f"{name:<20} {params / 1e6:>7.1f}M {config.embed_dim:>5} {config.depth:>6} {config.num_registers:>4}  {url}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m extract_features.loader",
                                     description="DINOv2 and DINOv3 backbones and where their weights come from.")
    parser.add_argument("--list", action="store_true", required=True,
                        help="list backbones, sizes and official weight URLs")
    parser.parse_args(argv)
    list_backbones()


if __name__ == "__main__":
    run_cli(main)
