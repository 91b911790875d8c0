"""Test the seed's claims on the embedded game: train the ablation grid on the demo's cache and score
every head closed-loop on the same held-out tracks, with a verdict per claim.

    python -m tools.ablate_drive [--demo runs/demo] [--out runs/ablate-drive] [--seeds 0 1] [--tracks 10]
    python -m tools.ablate_drive --game carracing_hood --demo runs/demo-hood --out runs/ablate-drive-hood --seeds 0 1 2

Rows: the default head and one change at a time (seq 1/2, no RNN, no label shift, CLS only; GRU, the seed
successor's transformer over all tokens of all frames, patches + CLS, which --skip can leave out), the
default head with thresholded instead of proportional steering or gas, and a control whose "backbone" is
the identity on raw 14x14 pixel patches. Where the game has a HUD (the minimap): the same augmentation with
the HUD distorted like any other pixels (its own cache, extract_features --hud distort), and no
augmentation. Where it has traffic: the default head driven without it. Writes OUT/ablation.md (the table
and each claim's verdict by the 2-standard-error rule over training seeds), OUT/ablation.png and
OUT/results.json. The demo's recordings (expert demos and DAgger rounds) and cache are made first
when missing; every row trains on them. Each finished row is kept in OUT/rows/ (its training runs and
closed-loop scores), so a run that was interrupted continues with the rows still missing.
"""
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from data.atomic import write_json, write_text
from data.errors import UserError
from data.profiles import load_profile
from drive.carracing.evaluate import evaluate_agent, evaluate_expert
from drive.carracing.hood_game import game_view
from drive.carracing.verdict import verdict
from extract_features.models import RAW_PATCHES
from drive.carracing.demo import DemoSettings, backbone_label, features, held_out, learn, train_settings
from train_head.ablate import Variation, default_grid, markdown_table, plot, run_grid, slug

CLOSED_LOOP = [("reward ↑", "reward"), ("tiles % ↑", "tiles"), ("off-track ↓", "off_track"), ("crashes ↓", "crashes")]


def closed_loop(ckpts: list[Path], seeds: list[int], latency: float, controller: dict | None = None,
                game_settings=None) -> dict:
    """Mean and spread over every (training seed, track) of reward, tiles, off-track events and crashes."""
    per_ckpt = [evaluate_agent(ckpt, seeds, latency=latency, controller=controller, game_settings=game_settings,
                               log=lambda *a: None) for ckpt in ckpts]
    return {**_spread([r for runs in per_ckpt for r in runs]),
            "seed_rewards": [float(np.mean([r.reward for r in runs])) for runs in per_ckpt]}


def kept_row(out: Path, name: str, settings: dict, make, log=lambda what: None) -> dict:
    """The row `name` from OUT/rows/ when an earlier run finished it with the same settings; else make() it
    and keep it there (written whole or not at all)."""
    path = out / "rows" / f"{slug(name)}.json"
    if path.exists():
        kept = json.loads(path.read_text())
        if kept.get("settings") != settings:
            raise UserError(f"{path}: made with other settings ({kept.get('settings')}); pass another --out "
                            f"or remove {out / 'rows'}")
        log(f"kept from an earlier run: {name}")
        return kept["row"]
    row = make()
    write_json(path, {"settings": settings, "row": row}, indent=1, default=str)
    return row


def _spread(runs) -> dict:
    out = {}
    for key, values in (("reward", [r.reward for r in runs]), ("tiles", [100 * r.tile_share for r in runs]),
                        ("off_track", [r.off_track_events for r in runs]), ("crashes", [r.crashes for r in runs])):
        out[key], out[key + "_std"] = float(np.mean(values)), float(np.std(values))
    out["tracks"] = [r.reward for r in runs]
    return out


HUD_DISTORTED = "hud distorted by augmentation"
NO_AUGMENTATION = "no augmentation (clean frames)"
NO_TRAFFIC = "default, driven without traffic"
CONTROL = "control: raw pixel patches, no backbone"
EXPERT = "expert (same latency)"

# (the claim, the row of the seed's choice, the row it is compared with); the default row is named at run time
CLAIMS = [
    ("a sequence of 3 beats 1", None, "seq 1"),
    ("a sequence of 3 beats 2", None, "seq 2"),
    ("an LSTM beats no RNN (the sequence concatenated)", None, "no rnn (concat)"),
    ("an LSTM beats a GRU", None, "gru"),
    ("an LSTM beats the seed successor's transformer", None, "transformer (the seed's successor)"),
    ("shifting labels by the latency helps", None, "no label shift"),
    ("all patch tokens beat the CLS token alone", None, "cls only"),
    ("patches alone beat patches + CLS", None, "patches + cls"),
    ("proportional steering beats thresholded (same checkpoints)", None, "thresholded steering"),
    ("proportional gas beats thresholded (ours, for CarRacing; same checkpoints)", None, "thresholded gas"),
    ("keeping the HUD (minimap) out of augmentation beats distorting it", None, HUD_DISTORTED),
    ("augmentation (HUD kept) beats none", None, NO_AUGMENTATION),
    ("augmentation distorting the HUD beats none", HUD_DISTORTED, NO_AUGMENTATION),
    ("traffic costs the agent reward (with traffic vs without; same checkpoints)", NO_TRAFFIC, None),
    ("the backbone adds over raw pixels", None, CONTROL),
]


def verdicts(rows: list[dict]) -> str:
    """One line per claim whose two rows were run: rewards per training seed, gap / standard error, verdict."""
    by_name = {row["name"]: row for row in rows}
    lines = ["| claim | reward per training seed: the seed's choice vs the other | gap / standard error: verdict |",
             "|---|---|---|"]
    for claim, a, b in CLAIMS:
        a, b = by_name.get(a or rows[0]["name"]), by_name.get(b or rows[0]["name"])
        if a and b and a is not b:
            seeds = " vs ".join("(" + ", ".join(f"{r:.0f}" for r in row["seed_rewards"]) + ")" for row in (a, b))
            lines.append(f"| {claim} | {seeds} | {verdict(a['seed_rewards'], b['seed_rewards'])} |")
    return "\n".join(lines)


def run_ablation(s: DemoSettings, out: Path, seeds: list[int], skip: tuple[str, ...] = ()) -> str:
    """The demo's data (made when missing), every row of the grid (but those named in `skip`) trained with
    `seeds` and driven on the held-out tracks; writes OUT/ablation.md, OUT/ablation.png, OUT/results.json;
    returns the table, the verdicts and the note."""
    start = time.perf_counter()
    log = lambda what: print(f"[{time.perf_counter() - start:6.0f} s] {what}", flush=True)  # noqa: E731
    grid = default_grid(s.latency)
    optional = [v.name for v in grid[1:]] + ["thresholded steering", "thresholded gas", HUD_DISTORTED,
                                             NO_AUGMENTATION, NO_TRAFFIC, CONTROL]
    unknown = sorted(set(skip) - set(optional))
    if unknown:
        raise UserError(f"--skip {' '.join(unknown)}: not a row that can be skipped; rows: " + ", ".join(optional))
    profile = load_profile(s.game)
    traffic = game_view(profile, s.traffic)[1]
    cache, weights, _ = learn(s, log)  # the demo's recordings (expert + DAgger) and cache
    tracks = held_out(s)
    base = replace(train_settings(s, cache, out), quiet=True)
    game = s.game_settings()
    settings = {"game": s.game, "traffic": s.traffic, "seeds": seeds, "tracks": tracks, "steps": s.steps,
                "minutes": s.minutes, "latency": s.latency, "backbone": s.backbone, "weights": weights,
                "variants": list(s.variant_names)}

    def keep(name: str, make) -> dict | None:
        return None if name in skip else kept_row(out, name, settings, make, log)

    def ckpts(row: dict) -> list[Path]:
        return [Path(r["dir"]) / "best.pt" for r in row["runs"]]

    def trained(v: Variation, own_cache=None) -> dict | None:
        """own_cache() -> the cache this row trains on instead of the demo's; made only when the row is."""
        def make():
            row = run_grid(replace(base, cache=own_cache()) if own_cache else base, [v], seeds, out, log=log)[0]
            log(f"driving: {row['name']}")
            return {**row, **closed_loop(ckpts(row), tracks, s.latency, game_settings=game)}
        return keep(v.name, make)

    def driven_by_default(name: str, controller: dict | None = None, game_settings=game) -> dict | None:
        return keep(name, lambda: {
            "name": name, "variation": {}, "runs": default["runs"],
            **{k: v for k, v in default.items() if k.startswith("val_")},
            **closed_loop(ckpts(default), tracks, s.latency, controller=controller, game_settings=game_settings)})

    default = trained(grid[0])
    extra = {"gru", "transformer (the seed's successor)", "patches + cls"}  # run last: not the seed's claims
    rows = [default, driven_by_default("thresholded steering", {"proportional": False}),
            driven_by_default("thresholded gas", {"proportional_gas": False}),
            *[trained(v) for v in grid[1:] if v.name not in extra]]
    if profile.hud:
        rows += [trained(Variation(HUD_DISTORTED),
                         lambda: features(s, log, cache=s.out / "cache-hud-distorted", hud="distort")[0]),
                 trained(Variation(NO_AUGMENTATION, variant_weights=(("clean", 1.0),)))]
    if traffic:
        rows.append(driven_by_default(NO_TRAFFIC, game_settings=replace(game, traffic=0)))
    rows.append(trained(Variation(CONTROL),
                        lambda: features(s, log, backbone=RAW_PATCHES, cache=s.out / "cache-raw-patches")[0]))
    rows.append(keep(EXPERT, lambda: {
        "name": EXPERT, "variation": {}, "runs": [], "seed_rewards": [],
        **_spread(evaluate_expert(tracks, latency=s.latency, game_settings=game))}))
    rows += [trained(v) for v in grid[1:] if v.name in extra]
    rows = [row for row in rows if row is not None]

    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows, extra=CLOSED_LOOP)
    claims = verdicts(rows)
    note = (f"game: {s.game} ({traffic} traffic cars a track); "
            f"backbone: {backbone_label(s.backbone, weights)} (PCA {s.pca_dim}); variants "
            f"{', '.join(s.variant_names)}; {s.minutes:g} min of expert demos "
            f"+ {s.dagger_rounds} DAgger round(s) of {s.dagger_minutes:g} min; "
            f"{s.steps} steps; training seeds {seeds}; closed loop on tracks {tracks[0]}-{tracks[-1]} at a fixed "
            f"latency of {s.latency} s; ± in the table is the std over every (training seed, track) pair; a claim "
            f"is confirmed (refuted) when the gap of the mean rewards over training seeds exceeds (falls below "
            f"minus) twice its standard error. wall time {time.perf_counter() - start:.0f} s")
    write_text(out / "ablation.md", f"{table}\n\n{claims}\n\n{note}\n")
    write_json(out / "results.json", rows, indent=1, default=str)
    title = (f"{s.game} ({traffic} traffic cars), {len(tracks)} held-out tracks, training seeds "
             f"{', '.join(map(str, seeds))}; backbone: {backbone_label(s.backbone, weights)}")
    plot(rows, out / "ablation.png", keys=(("val BCE", "val_bce"), ("closed-loop reward", "reward"), ("tiles %", "tiles")),
         title=title)
    return f"{table}\n\n{claims}\n\n{note}"
