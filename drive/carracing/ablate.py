"""Test the seed's claims on the embedded game: train the ablation grid on the demo's cache and score
every head closed-loop on the same held-out tracks.

    python -m tools.ablate_drive [--demo runs/demo] [--out runs/ablate-drive] [--seeds 0 1] [--tracks 10]
    python -m tools.ablate_drive --game carracing_hood --demo runs/demo-hood --out runs/ablate-drive-hood --seeds 0 1 2

Rows: the default head and one change at a time (seq 1/2, GRU, no RNN, the seed successor's transformer
over all tokens of all frames, CLS only, patches + CLS, no label shift), the default head with thresholded instead of proportional steering or gas, and a control
whose "backbone" is the identity on raw 14x14 pixel patches. Writes OUT/ablation.md, OUT/ablation.png
and OUT/results.json. The demo's recordings (expert demos and DAgger rounds) and cache are made first
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
from drive.carracing.evaluate import evaluate_agent, evaluate_expert
from extract_features.models import RAW_PATCHES
from drive.carracing.demo import DemoSettings, backbone_label, features, held_out, learn, train_settings
from train_head.ablate import Variation, default_grid, markdown_table, plot, run_grid, slug

CLOSED_LOOP = [("reward ↑", "reward"), ("tiles % ↑", "tiles"), ("off-track ↓", "off_track"), ("crashes ↓", "crashes")]


def closed_loop(ckpts: list[Path], seeds: list[int], latency: float, controller: dict | None = None,
                game_settings=None) -> dict:
    """Mean and spread over every (training seed, track) of reward, tiles, off-track events and crashes."""
    runs = [r for ckpt in ckpts for r in evaluate_agent(ckpt, seeds, latency=latency, controller=controller,
                                                        game_settings=game_settings, log=lambda *a: None)]
    return _spread(runs)


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


def run_ablation(s: DemoSettings, out: Path, seeds: list[int]) -> str:
    """The demo's data (made when missing), every row of the grid trained with `seeds` and driven on the
    held-out tracks; writes OUT/ablation.md, OUT/ablation.png, OUT/results.json; returns the table and note."""
    start = time.perf_counter()
    log = lambda what: print(f"[{time.perf_counter() - start:6.0f} s] {what}", flush=True)  # noqa: E731
    cache, weights, _ = learn(s, log)  # the demo's recordings (expert + DAgger) and cache
    control_cache, _ = features(s, log, backbone=RAW_PATCHES, cache=s.out / "cache-raw-patches")
    tracks = held_out(s)

    base = replace(train_settings(s, cache, out), quiet=True)
    game = s.game_settings()
    settings = {"game": s.game, "traffic": s.traffic, "seeds": seeds, "tracks": tracks, "steps": s.steps,
                "minutes": s.minutes, "latency": s.latency, "backbone": s.backbone, "weights": weights}

    def keep(name: str, make) -> dict:
        return kept_row(out, name, settings, make, log)

    def ckpts(row: dict) -> list[Path]:
        return [Path(r["dir"]) / "best.pt" for r in row["runs"]]

    def trained(v: Variation, base_settings) -> dict:
        row = run_grid(base_settings, [v], seeds, out, log=log)[0]
        log(f"driving: {row['name']}")
        return {**row, **closed_loop(ckpts(row), tracks, s.latency, game_settings=game)}

    rows = [keep(v.name, lambda v=v: trained(v, base)) for v in default_grid(s.latency)]
    default = rows[0]
    for i, (name, controller) in enumerate([("thresholded steering", {"proportional": False}),
                                            ("thresholded gas", {"proportional_gas": False})], start=1):
        rows.insert(i, keep(name, lambda name=name, controller=controller: {
            "name": name, "variation": {}, "runs": default["runs"],
            **{k: v for k, v in default.items() if k.startswith("val_")},
            **closed_loop(ckpts(default), tracks, s.latency, controller=controller, game_settings=game)}))
    control = Variation("control: raw pixel patches, no backbone")
    rows.append(keep(control.name, lambda: trained(control, replace(base, cache=control_cache))))
    rows.append(keep("expert (same latency)", lambda: {
        "name": "expert (same latency)", "variation": {}, "runs": [],
        **_spread(evaluate_expert(tracks, latency=s.latency, game_settings=game))}))

    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows, extra=CLOSED_LOOP)
    note = (f"game: {s.game} (traffic: {'the profile default' if s.traffic is None else s.traffic}); "
            f"backbone: {backbone_label(s.backbone, weights)} (PCA {s.pca_dim}); {s.minutes:g} min of expert demos "
            f"+ {s.dagger_rounds} DAgger round(s) of {s.dagger_minutes:g} min; "
            f"{s.steps} steps; training seeds {seeds}; closed loop on tracks {tracks[0]}-{tracks[-1]} at a fixed "
            f"latency of {s.latency} s; ± is the std over every (training seed, track) pair. "
            f"wall time {time.perf_counter() - start:.0f} s")
    write_text(out / "ablation.md", f"{table}\n\n{note}\n")
    write_json(out / "results.json", rows, indent=1, default=str)
    plot(rows, out / "ablation.png", keys=(("val BCE", "val_bce"), ("closed-loop reward", "reward"),
                                                 ("tiles %", "tiles")), title=f"backbone: {backbone_label(s.backbone, weights)}")
    return table + "\n\n" + note

