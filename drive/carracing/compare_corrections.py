"""Take over and teach vs full-labelling DAgger vs neither, for the same expert-labelled game minutes.

    python -m tools.compare_corrections [--out runs/corrections] [--rounds 3] [--round-minutes 2] [--seeds 0 1 2]

All three arms start from the same expert demos, cache and first head (the demo's recipe, tools.demo) and
then get `rounds` x `round-minutes` of expert-labelled game time more:
  none      more expert demos (tracks 300+), no data from the agent's own driving;
  dagger    the latest head drives tracks 500+ while the expert labels every frame (tools.demo's rounds);
  takeover  the latest head drives the same tracks; the expert takes over behind a gate when the car
            leaves the road or drifts off the line, and only its stretches are labelled (drive.carracing.corrections);
            the agent may drive far longer than round-minutes, only the expert's frames count.
After the last round each arm trains its final head with every training seed, on all its data (no
validation split, so no arm loses a different share of its new data; the last checkpoint is scored), and
drives the held-out tracks at a fixed latency. Writes OUT/results.md (table and verdicts by the project's rule: a gap is
confirmed when it exceeds twice its standard error over training seeds) and OUT/results.json. Every step
is skipped when its output is there, so an interrupted run continues.
"""
import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from data.atomic import write_json, write_text
from data.episode import Episode
from data.errors import UserError
from drive.carracing.game import GameSettings
from drive.carracing.corrections import GateSettings, TakeoverRecordSettings, record_takeover, takeover_prefix
from drive.carracing.dagger import record_dagger
from drive.carracing.verdict import verdict
from drive.carracing.evaluate import evaluate_agent, evaluate_expert
from drive.carracing.expert_recording import RecordSettings, episode_prefix, record_expert
from drive.carracing.demo import DemoSettings, backbone_label, features, held_out, record, train_settings
from train_head.train import train

ARMS = ("none", "dagger", "takeover")
FIRST_TRACK = {"none": 300, "dagger": 500, "takeover": 500}  # round r drives tracks FIRST + 100 (r - 1), ...


@dataclass(frozen=True)
class CompareSettings:
    demo: DemoSettings = field(default_factory=lambda: DemoSettings(out=Path("runs/corrections")))
    rounds: int = 3
    round_minutes: float = 2.0  # expert-labelled game time each round adds, in every arm
    seeds: tuple[int, ...] = (0, 1, 2)  # training seeds of each arm's final head
    correction_weight: float = 1.0  # loss weight of correction samples in the takeover arm
    gate: GateSettings = field(default_factory=GateSettings)
    eval_steps: int = GameSettings.max_steps  # physics steps per held-out track


def arm_dir(s: CompareSettings, arm: str) -> Path:
    return s.demo.out / arm


def base(s: CompareSettings, log) -> tuple[DemoSettings, Path, str]:
    """The expert demos, their cache and the first head, shared by every arm; and the backbone weights used."""
    d = replace(s.demo, out=s.demo.out / "base")
    record(d, log)
    cache, weights = features(d, log)
    ckpt = pilot(d, cache, d.out / "round0", log)
    return d, ckpt, weights


def pilot(d: DemoSettings, cache: Path, out: Path, log) -> Path:
    if not (out / "best.pt").exists():
        log(f"training a pilot head for {d.pilot_steps} steps into {out}")
        train(train_settings(d, cache, out, d.pilot_steps))
    return out / "best.pt"


def start_arm(s: CompareSettings, d_base: DemoSettings, arm: str) -> DemoSettings:
    """The arm's folder begins as a copy of the base recordings and cache (stage 1 then only adds frames)."""
    d = replace(d_base, out=arm_dir(s, arm))
    if not (d.out / "cache").exists():
        d.out.mkdir(parents=True, exist_ok=True)
        shutil.copytree(d_base.out / "recordings", d.out / ".recordings.tmp", dirs_exist_ok=True)
        shutil.copytree(d_base.out / "cache", d.out / ".cache.tmp", dirs_exist_ok=True)
        (d.out / ".recordings.tmp").rename(d.out / "recordings")
        (d.out / ".cache.tmp").rename(d.out / "cache")
    return d


def collect(s: CompareSettings, d: DemoSettings, arm: str, ckpt: Path, r: int, log) -> None:
    """One round of `round_minutes` expert-labelled game time into the arm's recordings."""
    seed = FIRST_TRACK[arm] + 100 * (r - 1)
    recordings = d.out / "recordings"
    prefix = {"none": episode_prefix(seed), "dagger": episode_prefix(seed, "dagger"),
              "takeover": takeover_prefix(seed)}[arm]
    if any(p.name.startswith(prefix) for p in recordings.iterdir()):
        log(f"{arm} round {r} already recorded")
        return
    log(f"{arm} round {r}: {s.round_minutes:g} expert-labelled min from tracks {seed}+")
    if arm == "none":
        record_expert(recordings, s.round_minutes, seed=seed,
                      settings=RecordSettings(latency=d.latency, perturb_every=d.perturb_every))
    elif arm == "dagger":
        record_dagger(ckpt, recordings, s.round_minutes, seed, RecordSettings(latency=d.latency, perturb_every=0.0),
                      log=lambda *a: None)
    else:
        record_takeover(ckpt, recordings, s.round_minutes, seed, TakeoverRecordSettings(latency=d.latency, gate=s.gate),
                        log=log)


def run_arm(s: CompareSettings, d_base: DemoSettings, first: Path, arm: str, log) -> Path:
    """Every round of one arm; returns its cache."""
    d = start_arm(s, d_base, arm)
    ckpt, cache = first, d.out / "cache"
    for r in range(1, s.rounds + 1):
        collect(s, d, arm, ckpt, r, log)
        cache, _ = features(d, log)
        if r < s.rounds:
            ckpt = pilot(d, cache, d.out / f"round{r}", log)
    return cache


def final_heads(s: CompareSettings, arm: str, cache: Path, log) -> list[Path]:
    d = replace(s.demo, out=arm_dir(s, arm))
    ckpts = []
    for seed in s.seeds:
        out = d.out / f"final-seed{seed}"
        if not (out / "best.pt").exists():
            log(f"{arm}: final head, training seed {seed}, {d.steps} steps")
            ts = train_settings(d, cache, out, d.steps)
            weights = (("correction", s.correction_weight),) if arm == "takeover" and s.correction_weight != 1 else ()
            # no validation split: it would hold out a different share of each arm's new data (at toy size all of it)
            train(replace(ts, seed=seed, sampler=replace(ts.sampler, seed=seed, kind_weights=weights), quiet=True,
                          split=replace(ts.split, val_fraction=0.0)))
        ckpts.append(out / "best.pt")
    return ckpts


def held_out_scores(s: CompareSettings, arm: str, ckpts: list[Path], tracks: list[int], game, log) -> dict:
    """Mean reward and tile share per final head on the held-out tracks; kept in the arm's folder, so a
    resumed comparison does not drive them again."""
    path = arm_dir(s, arm) / "held_out.json"
    key = {"tracks": tracks, "latency": s.demo.latency, "eval_steps": s.eval_steps, "ckpts": [str(c) for c in ckpts]}
    if path.exists():
        kept = json.loads(path.read_text())
        if kept.get("key") == key:
            log(f"{arm}: held-out scores kept from an earlier run")
            return kept["scores"]
    log(f"{arm}: driving {len(tracks)} held-out tracks per training seed")
    runs = [evaluate_agent(c, tracks, latency=s.demo.latency, game_settings=game, log=lambda *a: None) for c in ckpts]
    scores = {"rewards": [float(np.mean([r.reward for r in rs])) for rs in runs],
              "tiles": [float(np.mean([r.tile_share for r in rs])) for rs in runs]}
    write_json(path, {"key": key, "scores": scores}, indent=1)
    return scores


def labelled_minutes(recordings: Path) -> dict[str, float]:
    """Expert-labelled game minutes by source, and the agent's lead-up minutes (never labels)."""
    out: dict[str, float] = {}
    for path in sorted(recordings.glob("*.zarr")):
        ep = Episode(path)
        source = ep.attrs.get("source", "expert")
        out[source] = out.get(source, 0.0) + (len(ep) - ep.context_frames - ep.pad_frames) / ep.fps / 60
        if ep.context_frames:
            out["lead-up (context)"] = out.get("lead-up (context)", 0.0) + ep.context_frames / ep.fps / 60
    return out


def run(s: CompareSettings) -> str:
    if s.rounds < 1 or not s.round_minutes > 0 or not s.seeds:
        raise UserError("--rounds >= 1, --round-minutes > 0 and at least one --seeds are needed")
    start = time.perf_counter()
    log = lambda what: print(f"[{time.perf_counter() - start:6.0f} s] {what}", flush=True)  # noqa: E731
    d_base, first, weights = base(s, log)
    tracks = held_out(s.demo)
    game = GameSettings(max_steps=s.eval_steps)
    rows = {}
    for arm in ARMS:
        cache = run_arm(s, d_base, first, arm, log)
        ckpts = final_heads(s, arm, cache, log)
        rows[arm] = {**held_out_scores(s, arm, ckpts, tracks, game, log),
                     "minutes": labelled_minutes(arm_dir(s, arm) / "recordings")}
    expert = evaluate_expert(tracks, latency=s.demo.latency, game_settings=game)
    report = table(s, rows, float(np.mean([r.reward for r in expert])), tracks, weights, time.perf_counter() - start)
    s.demo.out.mkdir(parents=True, exist_ok=True)
    write_text(s.demo.out / "results.md", report)
    write_json(s.demo.out / "results.json", rows, indent=1)
    print(report)
    return report


def table(s: CompareSettings, rows: dict, expert_reward: float, tracks: list[int], weights: str, wall_s: float) -> str:
    lines = ["| data beyond the shared demos | expert-labelled min added | reward per training seed | mean ± SE | "
             "tiles % | share of expert |", "|---|---:|---:|---:|---:|---:|"]
    for arm, row in rows.items():
        rewards = row["rewards"]
        se = np.std(rewards, ddof=1) / np.sqrt(len(rewards)) if len(rewards) > 1 else float("nan")
        lines.append(f"| {arm} | {s.rounds * s.round_minutes:g} | {', '.join(f'{r:.0f}' for r in rewards)} | {np.mean(rewards):.1f} ± {se:.1f} | "
                     f"{100 * np.mean(row['tiles']):.1f} | {100 * np.mean(rewards) / expert_reward:.0f} % |")
    verdicts = [f"- takeover vs dagger: {verdict(rows['takeover']['rewards'], rows['dagger']['rewards'])}",
                f"- takeover vs none: {verdict(rows['takeover']['rewards'], rows['none']['rewards'])}",
                f"- dagger vs none: {verdict(rows['dagger']['rewards'], rows['none']['rewards'])}"]
    minutes = "; ".join(f"{arm}: " + ", ".join(f"{k} {v:.2f}" for k, v in row["minutes"].items())
                        for arm, row in rows.items())
    d = s.demo
    return (f"# Corrections: none vs full-labelling DAgger vs takeover\n\n"
            f"backbone: {backbone_label(d.backbone, weights)}; "
            f"{d.minutes:g} min of shared expert demos, then {s.rounds} round(s) of {s.round_minutes:g} expert-labelled "
            f"min per arm; final heads {d.steps} steps, training seeds {list(s.seeds)}; held-out tracks "
            f"{tracks[0]}-{tracks[-1]} ({s.eval_steps} steps each) at a fixed latency of {d.latency} s; expert "
            f"{expert_reward:.1f}; takeover gate: off the road or > {s.gate.max_offset:g} from the centre line, back "
            f"within {s.gate.back_offset:g}; correction weight {s.correction_weight:g}\n\n" + "\n".join(lines)
            + "\n\ngap / standard error over training seeds:\n" + "\n".join(verdicts)
            + f"\n\nminutes in each arm's recordings by source: {minutes}\n\nwall time {wall_s:.0f} s\n")
