"""Stage 2: train a head on cached token sequences (in the manner of nanoGPT's train.py).

One process on one device, or under torchrun with DistributedDataParallel (each rank reads its own
share of the samples). Writes metrics.jsonl, curves.png, last.pt and best.pt into the run directory.
"""
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from cache.sampler import SamplerSettings, SequenceSampler
from cache.store import FeatureCache, random_backbone_note
from data.episode import Episode
from data.errors import UserError, disk_faults, require
from data.index import episode_info
from data.progress import progress, say_above
from data.split import Split, SplitSettings, split_episodes
from extract_features.device import pick_device
from train_head.checkpoint import load_checkpoint, save_checkpoint
from train_head.contract import ControllerSettings, DriveContract
from train_head.heads import HeadSettings, build_head
from train_head.memory import choose_mode
from train_head.metrics import MetricsLog, plot_curves, pos_weight_from_labels, val_metrics
from train_head.optim import OptimSettings, lr_at, make_optimizer, set_lr


@dataclass
class TrainSettings:
    cache: Path
    out_dir: Path
    head: HeadSettings = field(default_factory=HeadSettings)  # grid and channels are taken from the cache
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    split: SplitSettings = field(default_factory=SplitSettings)
    controller: ControllerSettings = field(default_factory=ControllerSettings)  # drive's defaults, stored
    memory_limit: int | None = None  # sampler mode auto: free bytes to assume; None: ask the device
    eval_every: int = 200
    eval_batches: int | None = None  # None: the whole validation split
    patience: int = 0  # stop after this many evaluations without a better val loss; 0: never
    pos_weight: bool = False  # weight rare keys (backward) up in the BCE
    device: str = "auto"
    bf16: bool | None = None  # None: on CUDA
    resume: bool = False
    seed: int = 0
    log_every: int = 50
    quiet: bool = False
    overwrite: bool = False  # train into a run directory that already holds a run, replacing it

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """The options not checked by the nested settings; train() calls it again (fields may be set later)."""
        require(self.eval_every >= 1, "--eval-every", self.eval_every, "at least 1 step")
        require(self.patience >= 0, "--patience", self.patience, ">= 0 evaluations (0: never stop early)")
        require(self.log_every >= 1, "log_every", self.log_every, "at least 1 step")
        if self.eval_batches is not None:
            require(self.eval_batches >= 1, "eval_batches", self.eval_batches, "at least 1 (or None: all)")
        if self.resume and self.overwrite:
            raise UserError("--resume and --overwrite contradict each other; choose one")


def _distributed() -> tuple[int, int, int]:
    """(rank, local_rank, world) under torchrun, else (0, 0, 1)."""
    if "RANK" not in os.environ:
        return 0, 0, 1
    torch.distributed.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])


def make_split(cache: FeatureCache, settings: SplitSettings) -> Split:
    return split_episodes([episode_info(Episode(ep.recording)) for ep in cache.episodes()], settings)


def train(s: TrainSettings) -> dict:
    """Train; returns the best validation metrics (or the last training loss when there is no val split).
    A full or read-only disk is a one-line error; last.pt of the last evaluation stays for --resume."""
    s.validate()
    check_run_dir(s.out_dir, s.resume, s.overwrite)
    with disk_faults(s.out_dir, kept="what was saved at the last evaluation is kept: rerun with --resume"):
        return _train(s)


def _train(s: TrainSettings) -> dict:
    rank, local_rank, world = _distributed()
    if s.device == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = pick_device(s.device)
    torch.manual_seed(s.seed + rank)
    say = (lambda *a: None) if (s.quiet or rank) else print

    cache = FeatureCache.open(s.cache)
    if not cache.episodes():
        raise UserError(f"{s.cache}: holds no episodes; run python -m extract_features first")
    split = make_split(cache, s.split)
    train_set = SequenceSampler(cache, split.train, s.sampler, device=device, rank=rank, world=world)
    val_set = SequenceSampler(cache, split.val, s.sampler, device=device)
    if s.sampler.mode == "auto":
        mode, why = choose_mode(train_set.ram_bytes() + val_set.ram_bytes(), device, s.memory_limit)
        say(why)
        for sampler in (train_set, val_set):
            sampler.s = replace(sampler.s, mode=mode)
    if len(train_set) == 0:
        need = (s.sampler.seq_len - 1) * s.sampler.stride_s + s.sampler.label_shift_s
        raise UserError(f"{s.cache}: no training sequence fits: --seq-len {s.sampler.seq_len} frames --stride "
                        f"{s.sampler.stride_s} s apart plus --label-shift {s.sampler.label_shift_s} s need {need:g} s "
                        f"of one recording (train split); record longer episodes or lower these")
    if len(train_set) < s.sampler.batch_size * world:
        raise UserError(f"--batch-size {s.sampler.batch_size}: more than the {len(train_set)} training sequences "
                        f"{'of each of the ' + str(world) + ' processes ' if world > 1 else ''}in {s.cache}; "
                        f"lower --batch-size or record more")
    if len(val_set) == 0:
        say(f"warning: no validation sequences (--val-fraction {s.split.val_fraction}, {len(split.val)} validation "
            f"segments); best.pt is the last step's and no val loss is reported")
    head_settings = replace(s.head, grid=cache.grid, channels=cache.stored_channels * len(s.sampler.layers),
                            cls_channels=int(cache.spec["channels"]), seq_len=s.sampler.seq_len, tokens=s.sampler.tokens)
    model = build_head(head_settings).to(device)
    raw_model = model
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
    optimizer = make_optimizer(raw_model, s.optim, device.type)
    use_bf16 = s.bf16 if s.bf16 is not None else device.type == "cuda"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
    pos_weight = None
    if s.pos_weight:
        pos_weight = pos_weight_from_labels(train_set.labels(train_set.table, train_set.draw_variants(0))).to(device)

    contract = drive_contract(s, cache, head_settings)
    step, best = 0, {"val_bce": math.inf}
    if s.resume:
        ckpt = load_checkpoint(s.out_dir / "last.pt", expected_fingerprint=cache.fingerprint)
        try:
            raw_model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError):
            raise UserError(f"{s.out_dir / 'last.pt'}: made with other head settings (--head, --tokens, --seq-len); "
                            f"resume with the flags of that run, or pass --overwrite") from None
        step, best = int(ckpt["step"]), dict(ckpt["best"])
        say(f"resumed from {s.out_dir / 'last.pt'} at step {step}")
    if s.overwrite and rank == 0:
        for name in (*RUN_FILES, "curves.png"):
            (s.out_dir / name).unlink(missing_ok=True)
    s.out_dir.mkdir(parents=True, exist_ok=True)
    log = (MetricsLog(s.out_dir / "metrics.jsonl", resume_step=step if s.resume else None,
                      note=random_backbone_note(cache.spec)) if rank == 0 else None)
    say(f"training {head_settings.kind}/{head_settings.tokens} head ({sum(p.numel() for p in raw_model.parameters()):,} "
        f"parameters) on {len(train_set)} train / {len(val_set)} val sequences, device {device}")

    def batches():
        epoch = 0
        while True:
            empty = True
            for batch in train_set.epoch(epoch, shuffle=True, drop_last=True):
                empty = False
                yield batch
            if empty:  # never spin: an epoch without a batch stays so
                raise UserError(f"--batch-size {s.sampler.batch_size}: no full batch in an epoch of "
                                f"{len(train_set)} training sequences; lower --batch-size")
            epoch += 1

    stale, t0, seen = 0, time.perf_counter(), 0
    stream = batches()
    bar = progress(total=s.optim.max_steps, initial=step, desc="training", unit="step", enabled=not (s.quiet or rank))
    say = say_above(bar) if not (s.quiet or rank) else say  # the periodic lines print above the bar
    try:
        while step < s.optim.max_steps:
            batch = next(stream)
            patch, cls = batch.float_tokens()  # the sampler yields stored dtypes: converted here, on the device
            weights = batch.weights if s.sampler.kind_weights else None
            loss = train_step(model, optimizer, s.optim, step, patch, cls, batch.keys, autocast, pos_weight, weights)
            step += 1
            bar.update()
            seen += len(batch.keys)
            if log and (step % s.log_every == 0 or step == 1):
                rate = seen * world / (time.perf_counter() - t0)
                log.log(step, train_loss=loss.item(), lr=lr_at(step - 1, s.optim), samples_per_s=rate)
                say(f"step {step:>6}  loss {loss.item():.4f}  {rate:,.0f} samples/s")
            if step % s.eval_every == 0 or step == s.optim.max_steps:
                if rank == 0:
                    metrics = evaluate(raw_model, val_set, autocast, s.eval_batches) if len(val_set) else {}
                    improved = bool(metrics) and metrics["val_bce"] < best["val_bce"]
                    if metrics:
                        log.log(step, **metrics)
                        say(f"step {step:>6}  val bce {metrics['val_bce']:.4f}  exact {metrics['val_exact_match']:.3f}"
                            + ("  (best)" if improved else ""))
                    state = dict(model_state=raw_model.state_dict(), fingerprint=cache.fingerprint, step=step,
                                 metrics=metrics, **contract.checkpoint_entries())
                    if improved or not len(val_set):
                        best = {**metrics, "step": step} if metrics else {"val_bce": math.inf, "step": step}
                        save_checkpoint(s.out_dir / "best.pt", best=best, **state)
                    save_checkpoint(s.out_dir / "last.pt", optimizer=optimizer.state_dict(), best=best, **state)
                    stale = 0 if improved else stale + 1
                stop = torch.tensor(int(bool(s.patience) and stale >= s.patience), device=device)
                if world > 1:  # rank 0 decides; every rank must leave the loop together
                    torch.distributed.broadcast(stop, src=0)
                if stop.item():
                    say(f"early stop: no better val loss in {s.patience} evaluations")
                    break
    finally:
        bar.close()
        if log:
            log.close()
            if log.path.stat().st_size:
                plot_curves(log.path, s.out_dir / "curves.png")
        if world > 1:
            torch.distributed.destroy_process_group()
    if math.isinf(best.get("val_bce", 0.0)):
        say(f"done at step {step} (no validation sequences: no val loss); checkpoints in {s.out_dir}")
    else:
        say(f"best val: {_short(best)}; checkpoints in {s.out_dir}")
    return best


RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl")


def check_run_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to train over an earlier run by accident, and to resume what is not there."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: is a file; give a directory for the run")
    held = [name for name in RUN_FILES if (out_dir / name).exists()]
    if resume and not (out_dir / "last.pt").exists():
        raise UserError(f"--resume: {out_dir / 'last.pt'} does not exist, nothing to resume; leave out --resume")
    if held and not (resume or overwrite):
        raise UserError(f"--out {out_dir}: already holds a run ({', '.join(held)}); pass --resume to continue it, "
                        f"--overwrite to replace it, or choose another --out")


def train_step(model, optimizer, optim: OptimSettings, step: int, patch, cls, keys: torch.Tensor, autocast,
               pos_weight: torch.Tensor | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
    """One optimisation step: lr for the step, forward under autocast, BCE, backward, clip, update.
    weights (B,): a sample of weight 3 counts as three samples of weight 1 in the batch's mean loss."""
    set_lr(optimizer, lr_at(step, optim))
    model.train()
    with autocast:
        logits = model(patch, cls)
    loss = weighted_bce(logits.float(), keys, pos_weight, weights)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if optim.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
    optimizer.step()
    return loss


def weighted_bce(logits: torch.Tensor, keys: torch.Tensor, pos_weight: torch.Tensor | None = None,
                 weights: torch.Tensor | None = None) -> torch.Tensor:
    """BCE averaged over keys, then over samples weighted by `weights` (None: all alike)."""
    if weights is None:
        return F.binary_cross_entropy_with_logits(logits, keys, pos_weight=pos_weight)
    per_sample = F.binary_cross_entropy_with_logits(logits, keys, pos_weight=pos_weight, reduction="none").mean(1)
    return (per_sample * weights).sum() / weights.sum().clamp_min(1e-12)


def parse_kind_weights(texts: list[str]) -> tuple[tuple[str, float], ...]:
    """['correction=3', ...] -> (('correction', 3.0), ...); one-line UserError naming --kind-weight."""
    out = {}
    for text in texts:
        kind, _, value = text.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not kind or not weight >= 0 or math.isinf(weight):
            raise UserError(f"--kind-weight {text!r}: expected KIND=WEIGHT with a weight >= 0, e.g. correction=3")
        out[kind] = weight
    return tuple(out.items())


@torch.no_grad()
def evaluate(model, sampler: SequenceSampler, autocast, max_batches: int | None = None) -> dict:
    model.eval()
    logits, keys = [], []
    for i, batch in enumerate(sampler.epoch(0, shuffle=False, variants=False)):
        if max_batches is not None and i >= max_batches:
            break
        with autocast:
            logits.append(model(*batch.float_tokens()).float())
        keys.append(batch.keys)
    return val_metrics(torch.cat(logits), torch.cat(keys))


def _projection(cache: FeatureCache) -> dict | None:
    if cache.projection is None:
        return None
    return {"mean": cache.projection.mean, "components": cache.projection.components}


def _layer_projections(cache: FeatureCache) -> dict:
    """The PCA of each earlier block stored, by block number (empty without layers or PCA)."""
    return {layer: {"mean": p.mean, "components": p.components} for layer, p in cache.projections.items() if layer >= 0}


def drive_contract(s: TrainSettings, cache: FeatureCache, head: HeadSettings) -> DriveContract:
    """Everything `drive` needs besides the weights: backbone, preprocessing, reduction and PCA, timing, controller."""
    spec = cache.spec
    return DriveContract.from_checkpoint({
        "settings": {"head": asdict(head), "sampler": asdict(s.sampler), "controller": asdict(s.controller),
                     **{k: spec[k] for k in ("backbone", "weights_digest", "weights_label", "weights_source",
                                             "precision", "preprocess", "reduction")},
                     "profile": _profile_name(cache)},
        "projection": _projection(cache), "layer_projections": _layer_projections(cache)})


def _profile_name(cache: FeatureCache) -> str:
    first = cache.episodes()[0]
    return Episode(first.recording).profile or "gta5"


def _short(metrics: dict) -> str:
    keys = ("val_bce", "val_exact_match", "step")
    return ", ".join(f"{k} {metrics[k]:.4g}" if isinstance(metrics.get(k), float) else f"{k} {metrics.get(k)}"
                     for k in keys if k in metrics)
