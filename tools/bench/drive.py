"""P4: decisions/s of the live loop (drive.loop.drive) with the ring buffer of features against the seed's
way, recomputing the backbone on every frame of the sequence at each decision.

The loop runs as `make drive` runs it: an Agent's preprocess, features (backbone + reduction) and head,
a KeyScheduler over a virtual keyboard; frames come from memory instead of the screen.
"""
import itertools
from dataclasses import dataclass
from pathlib import Path

import torch

from cache.reduce import Reduction
from cache.sampler import SamplerSettings
from data.profiles import load_profile
from drive.agent import Agent
from drive.controller import ControllerSettings
from drive.keys import KeyScheduler, RecordingSink
from drive.loop import DriveParts, LoopSettings, drive
from extract_features.device import precision_name
from extract_features.extractor import FeatureExtractor
from extract_features.loader import load_backbone
from extract_features.models import backbone_config, preprocess_settings
from extract_features.preprocess import patch_grid
from tools.bench.data import scene_frames
from tools.bench.machine import synchronizer
from train_head.contract import DriveContract
from train_head.heads import HeadSettings, build_head

PROFILE = "gta5"


@dataclass
class DriveBench:
    backbone: str
    decisions: int = 6  # timed decisions per mode and round
    warmup: int = 2
    rounds: int = 2  # the modes alternate; the best round of each counts
    seq_len: int = 3
    stride_s: float = 0.25


def bench_agent(s: DriveBench, device: torch.device) -> Agent:
    """What load_agent gives for a checkpoint of an untrained head over this backbone (fp16 cache)."""
    profile = load_profile(PROFILE)
    prep = preprocess_settings(backbone_config(s.backbone), profile.preprocess)
    backbone = load_backbone(s.backbone, "random", device=device, progress=False)
    h, w, _ = profile.frame_shape
    channels = backbone.config.embed_dim
    head_settings = HeadSettings(grid=patch_grid(h, w, prep), channels=channels, cls_channels=channels,
                                 seq_len=s.seq_len)
    head = build_head(head_settings).to(device).eval().requires_grad_(False)
    contract = DriveContract(backbone=s.backbone, weights_digest=backbone.weights_digest,
                             weights_label=backbone.weights_label, weights_source="random", precision="fp32",
                             preprocess=prep, reduction=Reduction(),
                             sampler=SamplerSettings(seq_len=s.seq_len, stride_s=s.stride_s), head=head_settings,
                             controller=ControllerSettings(), profile=PROFILE)
    return Agent(path=Path("(bench: untrained head)"), contract=contract, extractor=FeatureExtractor(backbone, prep),
                 projection=None, head=head, profile=profile, device=device)


def decision_speedup(s: DriveBench, device: torch.device, log=print) -> dict:
    agent = bench_agent(s, device)
    frames = scene_frames(32, agent.profile.frame_shape)
    counter = itertools.count()
    sync = synchronizer(device)

    def run(mode: str, decisions: int):
        with KeyScheduler(RecordingSink()) as scheduler:
            parts = DriveParts(grab=lambda: frames[next(counter) % len(frames)], preprocess_fn=agent.preprocess_fn,
                               features_fn=agent.features_fn, head_fn=agent.head_fn, scheduler=scheduler, sync=sync)
            loop = LoopSettings(seq_len=agent.seq_len, stride_s=agent.stride_s, mode=mode, max_decisions=decisions)
            return drive(parts, ControllerSettings(), loop, log=lambda message: None)

    for mode in ("ring", "recompute"):
        run(mode, s.warmup)
    results = {"ring": [], "recompute": []}
    for _ in range(s.rounds):
        for mode, summaries in results.items():
            summaries.append(run(mode, s.decisions))
    best = {mode: max(summaries, key=lambda summary: summary.decisions_per_s) for mode, summaries in results.items()}
    rate = {mode: summary.decisions_per_s for mode, summary in best.items()}
    log(f"  ring buffer {rate['ring']:.2f} decisions/s, recompute {rate['recompute']:.2f} decisions/s")
    return {"backbone": s.backbone, "precision": precision_name(agent.extractor.bf16), "seq_len": s.seq_len,
            "decisions": s.decisions, "rounds": s.rounds,
            "ring_decisions_per_s": rate["ring"], "recompute_decisions_per_s": rate["recompute"],
            "ring_p50_ms": best["ring"].latency_ms["total"]["p50"],
            "ring_p95_ms": best["ring"].latency_ms["total"]["p95"],
            "recompute_p50_ms": best["recompute"].latency_ms["total"]["p50"],
            "speedup": rate["ring"] / rate["recompute"], "goal": 2.5}
