"""A trained checkpoint as the live loop's parts: frame → model input → features → head logits.

Features are made the way stage 1 stored them, so the head sees the numbers it was trained on: the
checkpoint's backbone and weights (refused if their digest differs), its preprocessing, then its
reduction — PCA projection, then fp16 rounding or int8 quantize + dequantize. One frame's features are
a flat vector (patch tokens, then the CLS token, as the head's `tokens` setting uses them), so the
loop's ring buffer can stack them; head_fn splits them again.

SequenceSteps is the one place the head runs on live frames (LeRobot's select_action/reset): frame →
features → ring buffer → sequence by time → head → sigmoid. Agent.step uses it; the live loop
(drive.loop) builds one from its parts, so the embedded game, GTA V, DAgger's pilot and tools/replay all
go through the same code.
"""
import time
from dataclasses import dataclass, field
from typing import Callable
from pathlib import Path

import numpy as np
import torch

from cache.reduce import Projection, Reduction, dequantize_int8, quantize_int8
from cache.store import LAST
from data.errors import UserError
from data.profiles import GameProfile, load_profile
from drive.controller import ControllerSettings
from drive.ring import RingBuffer
from extract_features.device import cpu_features_text, fast_bf16, pick_device
from extract_features.extractor import FeatureExtractor
from extract_features.loader import load_backbone
from extract_features.vit_layers import BackboneOutput
from extract_features.preprocess import preprocess
from train_head.checkpoint import load_checkpoint
from train_head.contract import DriveContract
from train_head.heads import build_head

MODES = ("ring", "recompute")


def reduce_like_cache(patch: torch.Tensor, reduction: Reduction, projection: Projection | None) -> torch.Tensor:
    """Patch tokens (N, P, C) → float32 (N, P, C') equal to what the cache stores and the sampler restores
    (cache.reduce.reduce_tokens then restore_tokens), computed on the tokens' device."""
    if projection is not None:
        patch = projection(patch)
    if reduction.dtype == "int8":
        return dequantize_int8(*quantize_int8(patch))
    return patch.half().float()


class SequenceSteps:
    """Frames in, key probabilities out, one decision at a time; owns the ring buffer.

    mode "ring": the backbone runs on the newest frame only and the ring holds features; "recompute" (the
    seed's way, kept for the benchmark): the ring holds preprocessed frames and the backbone runs on every
    frame of the sequence. After each step, `times` holds the clock after preprocessing, backbone and head
    (sync() first, so GPU work is counted) and `sequence` the ring entries the head saw."""

    def __init__(self, preprocess_fn: Callable, features_fn: Callable, head_fn: Callable, seq_len: int,
                 stride_s: float, mode: str = "ring", capacity: int = 256, clock: Callable[[], float] = time.perf_counter,
                 sync: Callable[[], None] = lambda: None):
        if mode not in MODES:
            raise UserError(f"--mode {mode}: choose one of {', '.join(MODES)}")
        self.preprocess_fn, self.features_fn, self.head_fn = preprocess_fn, features_fn, head_fn
        self.seq_len, self.stride_s, self.mode, self.clock, self.sync = seq_len, stride_s, mode, clock, sync
        # the oldest slot's target, plus a stride to choose from
        self.ring = RingBuffer(capacity, seq_len * stride_s)
        self.times: tuple[float, float, float] = (0.0, 0.0, 0.0)
        self.sequence: list = []

    def reset(self) -> None:
        """Forget the history: after a pause, a takeover or a new track it would be stitched onto the new view."""
        self.ring.clear()

    def step(self, frame: np.ndarray, t: float) -> np.ndarray:
        """One frame captured at time t (seconds, never going back) → (4,) probabilities for w, a, s, d."""
        x = torch.as_tensor(self.preprocess_fn(frame))
        self.sync()
        t_pre = self.clock()
        with torch.inference_mode():
            if self.mode == "ring":
                self.ring.push(t, self.features_fn(x[None])[0])
                self.sequence = self.ring.select(t, self.seq_len, self.stride_s)
                features = torch.stack([e.item for e in self.sequence])
            else:
                self.ring.push(t, x)
                self.sequence = self.ring.select(t, self.seq_len, self.stride_s)
                features = self.features_fn(torch.stack([e.item for e in self.sequence]))
            self.sync()
            t_backbone = self.clock()
            probs = self.probabilities(features)
        self.times = (t_pre, t_backbone, self.clock())
        return probs

    def step_features(self, features: torch.Tensor, t: float) -> np.ndarray:
        """step() for a frame whose features were made already (offline replay extracts them in batches)."""
        with torch.inference_mode():
            self.ring.push(t, features)
            self.sequence = self.ring.select(t, self.seq_len, self.stride_s)
            return self.probabilities(torch.stack([e.item for e in self.sequence]))

    def probabilities(self, features: torch.Tensor) -> np.ndarray:
        return torch.sigmoid(self.head_fn(features[None]).float()).reshape(-1).cpu().numpy()


@dataclass
class Agent:
    path: Path  # the checkpoint file
    contract: DriveContract  # what the checkpoint promises: backbone, preprocessing, reduction, timing, ...
    extractor: FeatureExtractor  # the backbone, its preprocessing and autocast, as stage 1 ran them
    projection: Projection | None
    head: torch.nn.Module
    profile: GameProfile
    device: torch.device
    layer_projections: dict[int, Projection] = field(default_factory=dict)  # PCA of earlier blocks, by block
    stepper: SequenceSteps | None = field(default=None, repr=False)  # what step() runs, made on first use

    @property
    def seq_len(self) -> int:
        return self.contract.seq_len

    @property
    def stride_s(self) -> float:
        return self.contract.stride_s

    def controller(self, **overrides) -> ControllerSettings:
        """The checkpoint's controller defaults; overrides whose value is None are ignored."""
        return self.contract.controller.with_overrides(**overrides)

    def steps(self, mode: str = "ring", capacity: int = 256, clock: Callable[[], float] = time.perf_counter,
              sync: Callable[[], None] = lambda: None) -> SequenceSteps:
        """A fresh stepper over this agent's backbone and head (the live loop makes its own with its clock)."""
        return SequenceSteps(self.preprocess_fn, self.features_fn, self.head_fn, self.seq_len, self.stride_s,
                             mode, capacity, clock, sync)

    def step(self, frame: np.ndarray, t: float) -> np.ndarray:
        """One frame of the profile's size captured at time t → (4,) probabilities for w, a, s, d."""
        if self.stepper is None:
            self.stepper = self.steps()
        return self.stepper.step(frame, t)

    def step_features(self, features: torch.Tensor, t: float) -> np.ndarray:
        """step() for one frame's features made by frame_features (offline, in batches)."""
        if self.stepper is None:
            self.stepper = self.steps()
        return self.stepper.step_features(features, t)

    def reset(self) -> None:
        """Forget the frames seen so far (a new track, a pause, a takeover)."""
        if self.stepper is not None:
            self.stepper.reset()

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
        c = self.contract
        if c.head.uses_patches:
            tokens = {LAST: out.patch, **dict(zip(self.extractor.layers, out.layers))}
            projections = {LAST: self.projection, **self.layer_projections}
            reduced = [reduce_like_cache(tokens[layer].float(), c.reduction, projections.get(layer)) for layer in c.layers]
            parts.append(torch.cat(reduced, dim=-1).flatten(1))
        if c.head.uses_cls:
            parts.append(out.cls.float().half().float())  # the cache stores CLS tokens as fp16
        return torch.cat(parts, dim=1)

    def split(self, features: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(B, T, F) flat features → (patch (B, T, P, C') or None, cls (B, T, C) or None)."""
        s = self.contract.head
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


def extraction_precision(precision: str, dev: torch.device, path: Path, log) -> dict:
    """FeatureExtractor's bf16/int8 for driving a head whose features came out at `precision`: the same, since
    the tokens differ slightly between precisions, with a warning where that is slow or impossible here."""
    if precision == "bf16" and not fast_bf16(dev):
        where = f"this CPU ({cpu_features_text()})" if dev.type == "cpu" else str(dev)
        log(f"warning: {path}: features extracted in bf16, which {where} runs several times slower than fp32: "
            f"each decision is that much later; re-extract with --bf16 off and retrain to drive fast here")
    if precision == "int8" and dev.type != "cpu":
        log(f"warning: {path}: features extracted with --int8-backbone, which runs on CPUs only; the backbone runs "
            f"fp32 on {dev}, its tokens ~2 % off the training ones: re-extract without it and retrain to match")
    return {"bf16": precision == "bf16", "int8": precision == "int8" and dev.type == "cpu"}


def load_agent(ckpt_path: str | Path, weights: str | None = None, device: str = "auto", log=print) -> Agent:
    """The checkpoint's head plus its backbone. weights: where to find the backbone weights (default: what
    --weights said at extraction); refused unless they are the very weights the features came from."""
    path = Path(ckpt_path)
    ckpt = load_checkpoint(path)
    c = DriveContract.from_checkpoint(ckpt)
    dev = pick_device(device)
    weights = weights or c.weights_source
    backbone = load_backbone(c.backbone, weights, device=dev)
    if backbone.weights_digest != c.weights_digest:
        raise UserError(f"{path}: its features came from {c.backbone} weights {c.weights_digest[:12]} "
                        f"({c.weights_label}), but --weights {weights} gives {backbone.weights_digest[:12]}; "
                        f"pass the --weights the features were extracted with")
    log(f"backbone {backbone.name}: {backbone.weights_label}")
    projection = None
    if c.projection is not None:
        projection = Projection(c.projection["mean"].to(dev), c.projection["components"].to(dev))
    head = build_head(c.head)
    head.load_state_dict(ckpt["model"])
    head.to(dev).eval().requires_grad_(False)
    layer_projections = {layer: Projection(p["mean"].to(dev), p["components"].to(dev))
                         for layer, p in c.layer_projections.items()}
    extractor = FeatureExtractor(backbone, c.preprocess, layers=tuple(layer for layer in c.layers if layer != LAST),
                                 **extraction_precision(c.precision, dev, path, log))
    return Agent(path=path, contract=c, extractor=extractor, projection=projection, head=head,
                 profile=load_profile(c.profile), device=dev, layer_projections=layer_projections)
