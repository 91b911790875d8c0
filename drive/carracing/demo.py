"""The whole pipeline on the embedded CarRacing game, from nothing: `make demo`.

    python -m tools.demo [--out runs/demo] [--minutes 8] [--dagger-rounds 3] [--dagger-minutes 2] [--steps 1000] [--tracks 10]

1. the scripted expert drives tracks (seeds 0, 1, ...) and is recorded like a player would be, now
   and then pushed off its line so that the demos show how to get back (the keys stay the expert's);
2. stage 1 extracts ViT-S/14 tokens (real DINOv2 weights when the torch hub cache holds them, else a
   RANDOMLY initialised ViT-S/14, said so everywhere);
3. stage 2 trains the seed's CNN+LSTM head (3 frames 0.2 s apart, labels shifted by the latency);
4. DAgger: that agent drives other tracks (seeds 500+) while the expert's keys are recorded; stage 1
   and 2 again on everything (--dagger-rounds times);
5. the agent drives held-out tracks (seeds 1000+) with a fixed latency, next to the expert;
6. writes OUT/results.md (the table, the machine and the seconds per stage), OUT/drive.mp4 (first
   held-out track), OUT/train/curves.png.
The backbone runs in bf16 on GPUs and CPUs with AMX, else its Linear layers in dynamic int8 (CPUs with AVX2
only, or AVX512-BF16 without AMX); the first line says which, with the CPU features found. On a CPU of at
most 2 cores running int8, every backbone gets one torch thread and one runs per core: two processes recording the
expert, two backbones in stage 1, two processes driving (--threads, --workers); training uses both threads.
Each step is skipped when its output is already there, so an interrupted demo continues.
"""
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from cache.reduce import Reduction
from cache.sampler import SamplerSettings
from data.atomic import write_text
from data.episode import Episode
from data.errors import UserError, require
from data.profiles import load_profile
from data.split import SplitSettings
from drive.carracing.game import STEP_SECONDS, GameSettings
from drive.carracing.hood_game import game_view
from drive.carracing.evaluate import evaluate_agent, evaluate_expert, format_table
from drive.carracing.dagger import record_dagger
from drive.carracing.workers import in_processes, own_process
from drive.carracing.expert_recording import RecordSettings, episode_prefix, record_expert
from extract_features.device import (cpu_features_text, cpu_model, fastest_precision, int8_fits, int8_reason,
                                     pick_device, precision_name)
from extract_features.models import RAW_PATCHES, backbone_config
from extract_features.pipeline import ExtractSettings, extract
from extract_features.weights import hub_cache_path, official_url
from train_head.heads import HeadSettings
from train_head.optim import OptimSettings
from train_head.contract import ControllerSettings
from train_head.train import TrainSettings, train


# flip evens out the bends (a track loops one way, so most turn alike); the seed's warp (frames shifted
# sideways with a corrective steer) is meant for a camera behind the wheel, so only the hood view has it.
DEMO_VARIANTS = {"carracing": ("clean", "flip"), "carracing_hood": ("clean", "flip", "warp")}


@dataclass(frozen=True)
class DemoSettings:
    out: Path = Path("runs/demo")
    minutes: float = 8.0  # expert game time recorded (10 fps: 600 frames a minute)
    perturb_every: float = 2.0  # mean seconds between pushes off the line in the demos (recovery data)
    dagger_rounds: int = 3  # rounds of the agent driving while the expert labels (DAgger)
    dagger_minutes: float = 2.0  # game time the agent drives per round
    dagger_first_track: int = 500  # round r drives tracks 500 + 100 (r - 1), ...
    backbone: str = "dinov2_vits14"
    pca_dim: int | None = 96  # keeps the cache in RAM and the head quick on a CPU
    variants: tuple[str, ...] | None = None  # None: the game's (DEMO_VARIANTS)
    steps: int = 1000  # training steps of the final head; best.pt keeps the best val loss
    pilot_steps: int = 500  # ... of the heads that only drive for DAgger (their val loss bottoms out near 500)
    latency: float = 0.1  # thinking time of the agent while driving, and so the label shift
    stride_s: float = 0.2
    seq_len: int = 3
    tracks: int = 10  # held-out tracks, seeds 1000, 1001, ...
    first_track: int = 1000
    game: str = "carracing"  # the embedded game's profile: carracing (top-down) or carracing_hood (hood camera)
    traffic: int | None = None  # traffic cars per track (None: the profile's; carracing_hood has 5)
    threads: int | None = None  # torch CPU threads of each worker; None: see cpu_plan
    workers: int | None = None  # backbones running at once (stage 1, the drives); None: see cpu_plan
    seed: int = 0  # every head's initialisation (the sequences are drawn in the same order for any seed)

    @property
    def variant_names(self) -> tuple[str, ...]:
        return self.variants or DEMO_VARIANTS[self.game]

    def game_settings(self) -> GameSettings:
        return GameSettings(profile=self.game, traffic=self.traffic)

    def __post_init__(self):
        require(self.minutes > 0, "--minutes", self.minutes, "> 0 minutes of expert driving")
        require(self.dagger_rounds >= 0, "--dagger-rounds", self.dagger_rounds, ">= 0")
        require(self.dagger_minutes > 0, "--dagger-minutes", self.dagger_minutes, "> 0")
        require(self.steps >= 1, "--steps", self.steps, "at least 1")
        require(self.tracks >= 1, "--tracks", self.tracks, "at least 1 held-out track")
        require(self.threads is None or self.threads >= 1, "--threads", self.threads, "at least 1")
        require(self.workers is None or self.workers >= 1, "--workers", self.workers, "at least 1")
        require(self.seed >= 0, "--seed", self.seed, ">= 0")
        require(self.game in DEMO_VARIANTS, "--game", self.game, f"one of {', '.join(DEMO_VARIANTS)}")
        require(self.traffic is None or self.traffic >= 0, "--traffic", self.traffic, ">= 0 cars")
        if self.traffic is not None and self.game == "carracing":
            raise UserError(f"--traffic {self.traffic}: the top-down view cannot draw traffic; add --game carracing_hood")
        backbone_config(self.backbone)  # an unknown name fails now, not after minutes of recording


class StageTimes:
    """Seconds spent in each stage of the demo, summed over its rounds: where the time goes."""

    def __init__(self, clock=time.perf_counter):
        self.clock, self.seconds = clock, {}

    @contextmanager
    def __call__(self, stage: str):
        start = self.clock()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + self.clock() - start

    def table(self) -> str:
        rows = [f"| {stage} | {seconds:.0f} |" for stage, seconds in self.seconds.items()]
        return "\n".join(["| stage | seconds |", "|---|---:|", *rows, f"| all | {sum(self.seconds.values()):.0f} |"])


@dataclass(frozen=True)
class CpuPlan:
    """How the demo spreads over the CPU: `workers` backbones at once (stage-1 threads; processes that drive
    tracks), each with `threads` torch threads. Training runs in one process with all of them."""

    threads: int
    workers: int = 1

    @property
    def train_threads(self) -> int:
        return self.threads * self.workers


def cpu_plan(s: DemoSettings, device: torch.device, cores: int | None = None) -> CpuPlan:
    """threads: s.threads, else 1 on a CPU of at most 2 cores whose backbone runs int8 (int8_fits: no AMX),
    else torch's choice.
    workers: s.workers, else as many as fill the cores on a CPU (1 on a GPU).

    With 2 threads on 2 cores every op waits at a barrier for a thread that the demo's own reader, writer or
    game thread (or anything else) has taken the core from: ViT-S/14 at 168x112 (AVX2 kernels, a shared
    2-core machine) took 1084 ms/frame at batch 1 and 116 at batch 16 with 2 threads, 41 and 36 with 1.
    Two workers of one thread each use both cores without that barrier: 1.9x the frames/s of one (same
    kernels, idle machine, batch 32 and batch 1). CPUs with AMX, whose bf16 is fast, keep torch's choice,
    and so one worker on 2 cores."""
    cores = cores or os.cpu_count() or 1
    if s.threads is not None:
        threads = s.threads
    elif device.type == "cpu" and cores <= 2 and int8_fits(device):
        threads = 1
    else:
        threads = torch.get_num_threads()
    if s.workers is not None:
        workers = s.workers
    else:
        workers = max(1, cores // threads) if device.type == "cpu" else 1
    return CpuPlan(threads, workers)


def machine_line(plan: CpuPlan) -> str:
    """The CPU, the features torch found on it and the backbone precision they give, e.g. for a slow demo."""
    device = pick_device("auto")
    bf16, int8 = fastest_precision(device)
    why = f" (dynamic, Linear layers; {int8_reason(device)})" if int8 else ""
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
    threads = f"{plan.threads} thread{'s' if plan.threads > 1 else ''}"
    threads += f" x {plan.workers} workers" if plan.workers > 1 else ""
    return (f"{where}; CPU {cpu_model()}, {threads}, {cpu_features_text()}; "
            f"backbone in {precision_name(bf16, int8)}{why}")


def demo_weights(backbone: str) -> str:
    return "official" if hub_cache_path(official_url(backbone)).exists() else "random"


def record(s: DemoSettings, log, workers: int = 1) -> Path:
    """The expert's demos, in up to `workers` processes (each at least half a minute) that share out the
    tracks one process would drive (track_seeds)."""
    recordings = s.out / "recordings"
    if recordings.exists():
        check_frame_size(recordings, s)
        log(f"recordings already in {recordings}")
        return recordings
    seeds = track_seeds(s, 0, s.minutes, workers)
    log(f"recording {s.minutes:g} min of expert driving into {recordings}"
        + (f"; {len(seeds)} processes at once" if len(seeds) > 1 else ""))
    settings = RecordSettings(latency=s.latency, perturb_every=s.perturb_every, game=s.game_settings())
    in_processes(record_expert, [dict(out_dir=recordings, minutes=s.minutes / len(seeds), seed=seed,
                                      settings=settings) for seed in seeds], threads=1)
    return recordings


def check_frame_size(recordings: Path, s: DemoSettings) -> None:
    """A demo folder from an earlier version may hold frames of another size (CarRacing's were 240x160),
    or of the other view."""
    first = next(iter(sorted(recordings.glob("*.zarr"))), None)
    expected = load_profile(s.game).frame_shape
    if first is not None and (shape := Episode(first).frame_shape) != expected:
        raise UserError(f"{first}: frames of {shape[1]}x{shape[0]}, but the demo now records {expected[1]}x{expected[0]}; "
                        f"remove {s.out} or pass another --out")
    if first is not None and (profile := Episode(first).profile) != s.game:
        raise UserError(f"{first}: recorded with the {profile} profile, not {s.game}; remove {s.out} or pass another --out")


def features(s: DemoSettings, log, backbone: str | None = None, cache: Path | None = None,
             hud: str = "keep", workers: int = 1) -> tuple[Path, str]:
    """Stage 1 into OUT/cache (resumes; nothing to do when complete). Returns the cache and the weights used.
    hud="distort": the minimap augmented like any other pixels (extract_features --hud)."""
    backbone = backbone or s.backbone
    cache = cache or s.out / "cache"
    weights = "none" if backbone == RAW_PATCHES else demo_weights(backbone)
    if weights == "random":
        print("\n" + "!" * 78 + f"\n  No DINOv2 weights in the torch hub cache ({hub_cache_path(official_url(backbone))}).\n"
              f"  Running on a RANDOMLY INITIALISED {backbone}: real DINOv2 features drive better.\n"
              + "!" * 78 + "\n", flush=True)
    log(f"extracting {backbone} features into {cache}")
    bf16, int8 = fastest_precision(pick_device("auto")) if backbone != RAW_PATCHES else (False, False)
    extract(ExtractSettings(recordings=[s.out / "recordings"], cache=cache, backbone=backbone, weights=weights,
                            reduction=Reduction(pca_dim=s.pca_dim), variants=s.variant_names, hud=hud, block_rows=128,
                            batch_size=32, workers=workers,
                            bf16=bf16, int8_backbone=int8))
    return cache, weights


def train_settings(s: DemoSettings, cache: Path, out_dir: Path, steps: int | None = None) -> TrainSettings:
    return TrainSettings(cache=cache, out_dir=out_dir, head=HeadSettings(kind="lstm", tokens="patches"),
                         sampler=SamplerSettings(seq_len=s.seq_len, stride_s=s.stride_s, label_shift_s=s.latency,
                                                 batch_size=32),
                         optim=OptimSettings(lr=1e-3, min_lr=1e-4, warmup_steps=min(100, (steps or s.steps) // 10),
                                             max_steps=steps or s.steps),
                         split=SplitSettings(val_fraction=0.1), eval_every=250,
                         controller=ControllerSettings(proportional_gas=True), seed=s.seed,
                         overwrite=True)  # a head whose training was cut off (no best.pt yet) is trained afresh


def held_out(s: DemoSettings) -> list[int]:
    return list(range(s.first_track, s.first_track + s.tracks))


def backbone_label(backbone: str, weights: str) -> str:
    return {"random": f"RANDOMLY INITIALISED {backbone}", "none": "no backbone (raw pixel patches)"}.get(
        weights, f"{backbone} (DINOv2 weights)")


def run_dir(s: DemoSettings, r: int) -> Path:
    """Where round r trains: 0 on the expert demos, then once after each DAgger round; the last is OUT/train."""
    return s.out / "train" if r == s.dagger_rounds else s.out / f"train-round{r}"


def train_round(s: DemoSettings, cache: Path, r: int, log, trainer: Callable = train) -> Path:
    """The head of round r, trained by trainer(TrainSettings) (see training_process)."""
    directory = run_dir(s, r)
    if (directory / "best.pt").exists():
        log(f"head already trained: {directory / 'best.pt'}")
        return directory / "best.pt"
    steps = s.steps if r == s.dagger_rounds else s.pilot_steps
    log(f"training the head for {steps} steps into {directory}")
    trainer(train_settings(s, cache, directory, steps))
    return directory / "best.pt"


@contextmanager
def training_process(plan: CpuPlan | None) -> Iterator[Callable]:
    """What trains the heads. With a plan of several one-thread workers (a 2-core CPU without AMX): one
    process of its own, kept for every round, on all their threads, whose idle OpenMP threads sleep instead
    of spinning (OMP_WAIT_POLICY=PASSIVE unless set): spinning, 2 threads ran 6x slower than 1 whenever
    another program held a core; sleeping, 1.3x faster. Elsewhere this process: PASSIVE would slow its own
    2-thread live loop on a bf16 CPU (ViT-S/14, batch 1: 79-92 ms against 44-51)."""
    if plan is None or plan.workers == 1 or plan.threads > 1:
        yield train
        return
    with own_process(plan.train_threads, {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}) as call:
        yield lambda settings: call(train, s=settings)


def dagger_round(s: DemoSettings, ckpt: Path, r: int, log, workers: int = 1, threads: int = 1) -> None:
    """The agent of `ckpt` drives fresh tracks; the expert's keys for what it sees join the recordings.
    With workers, up to that many processes drive at once (each at least half a minute), sharing out the
    tracks one process would drive."""
    seed = s.dagger_first_track + 100 * (r - 1)
    recordings = s.out / "recordings"
    whole_round = round(s.dagger_minutes * 60 * load_profile(s.game).fps)
    # a round one process drove (an earlier run with --workers 1) is not topped up by a second process
    one_process = sum(len(Episode(p)) for p in recordings.glob(episode_prefix(seed, "dagger") + "*")) >= whole_round
    seeds = track_seeds(s, seed, s.dagger_minutes, 1 if one_process else workers)
    settings = RecordSettings(latency=s.latency, perturb_every=0.0, game=s.game_settings())
    jobs = [dict(ckpt=ckpt, out_dir=recordings, minutes=s.dagger_minutes / len(seeds), seed=part_seed,
                 settings=settings, log=quiet)
            for part_seed in seeds
            if not any(p.name.startswith(episode_prefix(part_seed, "dagger")) for p in recordings.iterdir())]
    if not jobs:
        log(f"DAgger round {r} already recorded")
        return
    log(f"DAgger round {r}: the agent drives {s.dagger_minutes:g} min (tracks {seed}+), the expert labels"
        + (f"; {len(jobs)} processes at once" if len(jobs) > 1 else ""))
    in_processes(record_dagger, jobs, threads)


def track_seeds(s: DemoSettings, seed: int, minutes: float, workers: int) -> list[int]:
    """First track of each process sharing out `minutes` of driving: up to `workers` of them, each driving at
    least half a minute. One process drives tracks seed, seed+1, ... for up to the game's time limit each, so
    process k starts where the tracks of the ones before it end."""
    parts = max(1, min(workers, int(minutes * 2)))
    fps = load_profile(s.game).fps
    track_frames = s.game_settings().max_steps * STEP_SECONDS * fps
    tracks_each = math.ceil(round(minutes / parts * 60 * fps) / track_frames)
    return [seed + part * tracks_each for part in range(parts)]


def quiet(*args) -> None:
    pass


def drive_held_out(s: DemoSettings, ckpt: Path, workers: int = 1, threads: int = 1) -> list:
    """The agent on the held-out tracks (video of the first), in up to `workers` processes; runs in track order."""
    chunks = [list(c) for c in np.array_split(held_out(s), min(workers, s.tracks))]
    jobs = [dict(agent=ckpt, seeds=chunk, latency=s.latency, video=s.out / "drive.mp4" if i == 0 else None,
                 game_settings=s.game_settings()) for i, chunk in enumerate(chunks)]
    return [run for runs in in_processes(evaluate_agent, jobs, threads) for run in runs]


def learn(s: DemoSettings, log, times: StageTimes | None = None, plan: CpuPlan | None = None) -> tuple[Path, str, Path]:
    """Expert demos, stage 1, stage 2, then per DAgger round: record, extract the new frames, train on all.
    Returns (cache, backbone weights used, the final checkpoint)."""
    times = times or StageTimes()
    plan = plan or CpuPlan(torch.get_num_threads())
    with times("recording the expert"):
        record(s, log, plan.workers)
    with times("stage 1 (backbone over the recordings)"):
        cache, weights = features(s, log, workers=plan.workers)
    with training_process(plan) as trainer:
        with times("training"):
            ckpt = train_round(s, cache, 0, log, trainer)
        for r in range(1, s.dagger_rounds + 1):
            with times("DAgger: the agent drives"):
                dagger_round(s, ckpt, r, log, plan.workers, plan.threads)
            with times("stage 1 (backbone over the recordings)"):
                cache, _ = features(s, log, workers=plan.workers)
            with times("training"):
                ckpt = train_round(s, cache, r, log, trainer)
    return cache, weights, ckpt


def run(s: DemoSettings) -> str:
    start = time.perf_counter()
    log = lambda what: print(f"[{time.perf_counter() - start:6.0f} s] {what}", flush=True)  # noqa: E731
    plan = cpu_plan(s, pick_device("auto"))
    torch.set_num_threads(plan.threads)
    machine = machine_line(plan)
    log(f"machine: {machine}")
    times = StageTimes()
    cache, weights, ckpt = learn(s, log, times, plan)
    seeds = held_out(s)
    log(f"driving {len(seeds)} held-out tracks (seeds {seeds[0]}-{seeds[-1]}), latency {s.latency} s")
    with times("held-out tracks: the agent drives"):
        agent = drive_held_out(s, ckpt, plan.workers, plan.threads)
    with times("held-out tracks: the expert drives"):
        expert = evaluate_expert(seeds, latency=s.latency, game_settings=s.game_settings())
    table = format_table({"agent": agent, "expert": expert}, compare=("agent", "expert"))
    cars = game_view(load_profile(s.game), s.traffic)[1]
    view = "top-down view" if s.game == "carracing" else f"hood camera, minimap, {cars} traffic cars a track"
    report = (f"# Demo: CarRacing ({s.game}: {view}), expert vs agent on held-out tracks\n\n"
              f"backbone: {backbone_label(s.backbone, weights)}; {s.minutes:g} min of expert demos (pushed off "
              f"the line every ~{s.perturb_every:g} s), then {s.dagger_rounds} DAgger round(s) of "
              f"{s.dagger_minutes:g} min; variants {', '.join(s.variant_names)}; PCA {s.pca_dim}; head lstm/patches "
              f"seq {s.seq_len} stride {s.stride_s} s; {s.steps} steps ({s.pilot_steps} before DAgger); latency "
              f"{s.latency} s (fixed, reproducible); proportional steering and gas; training seed {s.seed}\n\n{table}\n"
              f"wall time {time.perf_counter() - start:.0f} s on {machine}\n\n"
              f"Where the time went (steps already done by an earlier run take ~0 s):\n\n{times.table()}\n")
    write_text(s.out / "results.md", report)
    log(f"done: {s.out / 'results.md'}, {s.out / 'drive.mp4'}, {ckpt.parent / 'curves.png'}")
    print("\n" + table + "\n\n" + times.table())
    return report
