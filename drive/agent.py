"""A trained checkpoint as the live loop's parts: frame → model input → features → head logits.

Features are made the way stage 1 stored them, so the head sees the numbers it was trained on: the
checkpoint's backbone and weights (refused if their digest differs), its preprocessing, then its
reduction — PCA projection, then fp16 rounding or int8 quantize + dequantize. One frame's features are
a flat vector (patch tokens, then the CLS token, as the head's `tokens` setting uses them), so the
loop's ring buffer can stack them; head_fn splits them again.
"""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cache.reduce import Projection, Reduction, dequantize_int8, quantize_int8
from cache.store import LAST
from data.errors import UserError
from data.profiles import GameProfile, load_profile
from drive.controller import ControllerSettings
from extract_features.device import cpu_features_text, fast_bf16, pick_device
from extract_features.extractor import FeatureExtractor
from extract_features.loader import load_backbone
from extract_features.vit_layers import BackboneOutput
from extract_features.preprocess import PreprocessSettings, preprocess
from train_head.checkpoint import load_checkpoint
from train_head.heads import HeadSettings, build_head


def reduce_like_cache(patch: torch.Tensor, reduction: Reduction, projection: Projection | None) -> torch.Tensor:
    """Patch tokens (N, P, C) → float32 (N, P, C') equal to what the cache stores and the sampler restores
    (cache.reduce.reduce_tokens then restore_tokens), computed on the tokens' device."""
    if projection is not None:
        patch = projection(patch)
    if reduction.dtype == "int8":
        return dequantize_int8(*quantize_int8(patch))
    return patch.half().float()


@dataclass
class Agent:
    path: Path  # the checkpoint file
    settings: dict  # the checkpoint's settings (see train_head.train._drive_settings)
    extractor: FeatureExtractor  # the backbone, its preprocessing and autocast, as stage 1 ran them
    reduction: Reduction
    projection: Projection | None
    head_settings: HeadSettings
    head: torch.nn.Module
    profile: GameProfile
    device: torch.device
    layers: tuple[int, ...] = (LAST,)  # blocks whose patch tokens the head reads, side by side (train_head --layers)
    layer_projections: dict[int, Projection] = field(default_factory=dict)  # PCA of earlier blocks, by block

    @property
    def seq_len(self) -> int:
        return int(self.settings["seq_len"])

    @property
    def stride_s(self) -> float:
        return float(self.settings["stride_s"])

    def controller(self, **overrides) -> ControllerSettings:
        """The checkpoint's controller defaults; overrides whose value is None are ignored."""
        defaults = {k: v for k, v in self.settings.get("controller", {}).items()
                    if k in ControllerSettings.__dataclass_fields__}
        return ControllerSettings(**{**defaults, **{k: v for k, v in overrides.items() if v is not None}})

    def warm_up(self) -> None:
        """One decision's work on a black frame, so that the first real one is not slowed by set-up."""
        features = self.features_fn(self.preprocess_fn(np.zeros(self.profile.frame_shape, np.uint8))[None])
        self.head_fn(features[None].expand(1, self.seq_len, -1))

    def preprocess_fn(self, frame: np.ndarray) -> torch.Tensor:
        """One uint8 RGB frame at the profile's stored size → the backbone input (3, H', W')."""
        if frame.shape != self.profile.frame_shape:
            raise ValueError(f"frame {frame.shape} is not the {self.profile.frame_shape} the checkpoint was "
                             f"trained on (profile {self.profile.name}); resize it first")
        return preprocess(frame, self.extractor.settings, self.device)[0]

    def features_fn(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone inputs (N, 3, H', W') → (N, F) reduced features, one flat vector per frame."""
        bf16 = self.extractor.bf16
        with torch.inference_mode():
            with torch.autocast(self.device.type, torch.bfloat16, enabled=bf16):
                out = self.extractor.model(x.to(self.device), layers=self.extractor.layers)
            return self.reduce(out)  # outside autocast, like stage 1: a bf16 PCA would change the numbers

    def frame_features(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 frames (N, H, W, 3) → (N, F) features, for offline use (replay)."""
        with torch.inference_mode():
            return self.reduce(self.extractor(frames))

    def reduce(self, out: BackboneOutput) -> torch.Tensor:
        parts = []
        if self.head_settings.uses_patches:
            tokens = {LAST: out.patch, **dict(zip(self.extractor.layers, out.layers))}
            projections = {LAST: self.projection, **self.layer_projections}
            reduced = [reduce_like_cache(tokens[layer].float(), self.reduction, projections.get(layer)) for layer in self.layers]
            parts.append(torch.cat(reduced, dim=-1).flatten(1))
        if self.head_settings.uses_cls:
            parts.append(out.cls.float().half().float())  # the cache stores CLS tokens as fp16
        return torch.cat(parts, dim=1)

    def split(self, features: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(B, T, F) flat features → (patch (B, T, P, C') or None, cls (B, T, C) or None)."""
        s = self.head_settings
        b, t, _ = features.shape
        rows, cols = s.grid
        n_patch = rows * cols * s.channels if s.uses_patches else 0
        patch = features[..., :n_patch].reshape(b, t, rows * cols, s.channels) if s.uses_patches else None
        cls = features[..., n_patch:] if s.uses_cls else None
        return patch, cls

    def head_fn(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, F) features of sequences, oldest first → (B, 4) logits for w, a, s, d."""
        with torch.inference_mode():
            return self.head(*self.split(features.to(self.device)))


def load_agent(ckpt_path: str | Path, weights: str | None = None, device: str = "auto", log=print) -> Agent:
    """The checkpoint's head plus its backbone. weights: where to find the backbone weights (default: what
    --weights said at extraction); refused unless they are the very weights the features came from."""
    path = Path(ckpt_path)
    ckpt = load_checkpoint(path)
    s = ckpt["settings"]
    dev = pick_device(device)
    weights = weights or s["weights_source"]
    backbone = load_backbone(s["backbone"], weights, device=dev)
    if backbone.weights_digest != s["weights_digest"]:
        raise UserError(f"{path}: its features came from {s['backbone']} weights {s['weights_digest'][:12]} "
                        f"({s['weights_label']}), but --weights {weights} gives {backbone.weights_digest[:12]}; "
                        f"pass the --weights the features were extracted with")
    log(f"backbone {backbone.name}: {backbone.weights_label}")
    prep = PreprocessSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in s["preprocess"].items()})
    projection = None
    if ckpt.get("projection") is not None:
        projection = Projection(ckpt["projection"]["mean"].to(dev), ckpt["projection"]["components"].to(dev))
    head_settings = HeadSettings(**s["head"])
    head = build_head(head_settings)
    head.load_state_dict(ckpt["model"])
    head.to(dev).eval().requires_grad_(False)
    layers = tuple(s["sampler"].get("layers", (LAST,)))  # checkpoints from before layers read the last block
    layer_projections = {int(layer): Projection(p["mean"].to(dev), p["components"].to(dev))
                         for layer, p in (ckpt.get("layer_projections") or {}).items()}
    # the backbone runs at the precision the features were extracted with (bf16 tokens differ slightly)
    bf16 = s.get("precision", "fp32") == "bf16"
    if bf16 and not fast_bf16(dev):
        where = f"this CPU ({cpu_features_text()})" if dev.type == "cpu" else str(dev)
        log(f"warning: {path}: features extracted in bf16, which {where} runs several times slower than fp32: "
            f"each decision is that much later; re-extract with --bf16 off and retrain to drive fast here")
    extractor = FeatureExtractor(backbone, prep, bf16=bf16, layers=tuple(layer for layer in layers if layer != LAST))
    return Agent(path=path, settings=s, extractor=extractor, reduction=Reduction(**s["reduction"]),
                 projection=projection, head_settings=head_settings, head=head, profile=load_profile(s["profile"]),
                 device=dev, layers=layers, layer_projections=layer_projections)
