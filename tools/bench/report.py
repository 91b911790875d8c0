"""bench/results.json and bench/results.md from the figures of one run, written atomically."""
from pathlib import Path

from data.atomic import write_json, write_text


def _goal_rows(figures: dict, quick: bool) -> list[str]:
    def _met(value: float, goal: float) -> str:
        if quick:
            return "(quick run)"
        return "met" if value >= goal else "**not met**"

    rows = []
    if "stage1" in figures:
        f = figures["stage1"]
        rows.append(f"| Stage-1 efficiency: extract() ÷ bare backbone ({f['backbone']}, {f['precision']}, batch "
                    f"{f['batch']}, {f['frames']} frames) | {f['efficiency']:.2f} ({f['pipeline_frames_per_s']:.3g} vs "
                    f"{f['backbone_frames_per_s']:.3g} frames/s; {f['efficiency_with_setup']:.2f} with setup) "
                    f"| ≥ {f['goal']:.2f} | {_met(f['efficiency'], f['goal'])} |")
    if "p1" in figures:
        f = figures["p1"]
        rows.append(f"| P1 training from the cache ÷ the seed's way ({f['backbone']}, batch {f['batch']}, "
                    f"{f['precision']}) | {f['speedup']:.1f}× ({f['cache_samples_per_s']:.3g} vs "
                    f"{f['seed_samples_per_s']:.3g} samples/s) | ≥ {f['goal']:.0f}× | {_met(f['speedup'], f['goal'])} |")
    if "p3" in figures:
        f = figures["p3"]
        rows.append(f"| P3 sampler stream read ÷ plain sequential read ({f['cache_gb']:.1f} GB, page cache {f['page_cache']}) "
                    f"| {f['efficiency']:.2f} ({f['sampler_bytes_per_s'] / 1e9:.2f} vs {f['plain_bytes_per_s'] / 1e9:.2f} GB/s; "
                    f"{f['efficiency_first_epoch']:.2f} in a first epoch, on fresh memory; "
                    f"{f['efficiency_float32']:.2f} with the float32 conversion the training step does) "
                    f"| ≥ {f['goal']:.1f} | {_met(f['efficiency'], f['goal'])} |")
    if "p4" in figures:
        f = figures["p4"]
        rows.append(f"| P4 live loop, ring buffer ÷ recompute ({f['backbone']}, {f['precision']}, seq {f['seq_len']}) "
                    f"| {f['speedup']:.2f}× ({f['ring_decisions_per_s']:.3g} vs {f['recompute_decisions_per_s']:.3g} "
                    f"decisions/s) | ≥ {f['goal']:.1f}× | {_met(f['speedup'], f['goal'])} |")
    if "key_release" in figures:
        f = figures["key_release"]
        for name, what in (("idle", "main thread asleep"), ("busy", "main thread running Python")):
            r = f[name]
            rows.append(f"| Key release time error, {what} ({r['releases']} releases, holds inside "
                        f"{f['interval_ms'][0]:.0f}–{f['interval_ms'][1]:.0f} ms intervals, {f['timer']}) "
                        f"| median {r['median_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.2f} ms "
                        f"| p99 ≤ {f['goal_ms']:.0f} ms | {_met(f['goal_ms'], r['p99_ms'])} |")
    return rows


def precision_line(m: dict) -> str:
    """Which precision the figures ran in and why (results of older runs carry no precision: fp32/bf16 as labelled)."""
    if "precision" not in m:
        return "as labelled per figure"
    why = "this GPU has bf16" if m["device"] != "cpu" else (
        f"CPU kernels {', '.join(m['cpu_features'])}" + ("" if m["precision"] == "bf16" else "; no fast bf16 (AVX512-BF16 or AMX)"))
    return f"{m['precision']} ({why})"


def markdown(results: dict) -> str:
    m, figures = results["machine"], results["figures"]
    device = "no GPU" if m["device"] == "cpu" else f"GPU {m['device']} (CUDA {m['cuda']})"
    commit = f" at commit {m['commit']}" if m.get("commit") else ""
    lines = [
        "# Benchmarks",
        "",
        f"Machine: {device}; CPU {m['cpu']}, {m['cpu_cores']} cores, torch threads: {m['torch_threads']}; "
        f"torch {m['torch']}, zarr {m['zarr']}, numpy {m['numpy']}, Python {m['python']}.",
        f"Precision: {precision_line(m)}.",
        f"Run {m['date']}{commit} with `{m['command']}`"
        f"{' (quick: small sizes, indicative only)' if results['quick'] else ''}.",
        "Backbones have RANDOM weights: speed does not depend on the weights.",
    ]
    load = [v for v in (m.get("load_average_start"), m.get("load_average_end")) if v is not None]
    if load and max(load) > 0.5 * m["cpu_cores"]:
        lines.append(f"Other work was running (load average {' → '.join(f'{v:.1f}' for v in load)} on "
                     f"{m['cpu_cores']} cores): speeds are lower and ratios noisier than on an idle machine.")
    if results["skipped"]:
        lines.append(f"Skipped: {', '.join(results['skipped'])}.")
    rows = _goal_rows(figures, results["quick"])
    if rows:
        lines += ["", "| figure | measured | goal | |", "|---|---|---|---|", *rows]
    if "backbone" in figures:
        f = figures["backbone"]
        lines += ["", f"Backbone forward on {f['input'][1]}x{f['input'][0]} frames padded to each patch size, batch "
                      f"{f['batch']}, median of {f['iters']} batches (ms per frame; bf16 = autocast, int8 = dynamic, "
                      f"CPU only; errors relative to fp32):", "",
                  "| backbone | patches | fp32 ms/frame | bf16 ms/frame | bf16 rel. error (patch / CLS) | int8 ms/frame "
                  "| int8 rel. error (patch / CLS) |", "|---|---|---|---|---|---|---|"]
        for name, v in f["backbones"].items():
            grid = "x".join(map(str, v["grid"])) if "grid" in v else "–"  # results written before the column
            int8 = (f"{v['int8_ms_per_frame']:.1f} | {v['int8_rel_err_patch']:.1e} / {v['int8_rel_err_cls']:.1e}"
                    if "int8_ms_per_frame" in v else "– | –")  # a GPU, or results written before int8
            lines.append(f"| {name} | {grid} | {v['fp32_ms_per_frame']:.1f} | {v['bf16_ms_per_frame']:.1f} | "
                         f"{v['bf16_rel_err_patch']:.1e} / {v['bf16_rel_err_cls']:.1e} | {int8} |")
    if "cache_bytes" in figures:
        f = figures["cache_bytes"]
        lines += ["", "Feature cache size per frame: bytes of the token arrays extract() wrote (patch tokens, "
                      "int8 scales, fp16 CLS) ÷ frames:", "",
                  "| backbone | patches | fp16 | int8 | PCA (fp16) |", "|---|---|---|---|---|"]
        for name, v in f["backbones"].items():
            r = v["reductions"]
            lines.append(f"| {name} | {v['grid'][0]}x{v['grid'][1]} | {r['fp16']['bytes_per_frame'] / 1000:.1f} kB "
                         f"| {r['int8']['bytes_per_frame'] / 1000:.1f} kB "
                         f"| {r['pca']['bytes_per_frame'] / 1000:.1f} kB ({v['pca_dim']} dims) |")
    if "scale" in figures:
        lines += scale_lines(figures["scale"])
    return "\n".join(lines) + "\n"


def scale_lines(f: dict) -> list[str]:
    lines = ["", f"Scale: one stream-mode training epoch (default head and sampler, {f['device']}) from synthetic caches "
                 f"of {f['geometry']} ({f['row_bytes'] / 1e3:.1f} kB a row); machine memory "
                 f"{f['memory_bytes'] / 1e9:.1f} GB:", "",
             "| cache | training samples/s | epoch | sampler alone: read ÷ plain read | peak memory (before reading; buffer bound) "
             "| index bytes/sample |", "|---|---|---|---|---|---|"]
    for size, v in f["sizes"].items():
        if "skipped" in v:
            lines.append(f"| {size}: {v['cache_bytes'] / 1e9:.1f} GB | skipped: {v['skipped']} | | | | |")
            continue
        lines.append(f"| {size}: {v['cache_bytes'] / 1e9:.1f} GB, {v['samples']} samples | {v['train_samples_per_s']:.0f} "
                     f"({v['precision']}, batch {v['batch']}) | {v['train_epoch_s']:.0f} s"
                     f"{' (extrapolated from ' + str(v['train_steps']) + ' steps)' if v['capped'] else ''} "
                     f"| {v['read_efficiency']:.2f} ({v['sampler_bytes_per_s'] / 1e9:.2f} vs "
                     f"{v['plain_bytes_per_s'] / 1e9:.2f} GB/s, page cache {v['page_cache']}) "
                     f"| {v['peak_rss_bytes'] / 1e9:.2f} GB ({v['baseline_rss_bytes'] / 1e9:.2f}; {v['buffer_bound_bytes'] / 1e9:.2f} GB) "
                     f"| {v['index_bytes_per_sample']:.0f} |")
    return lines


def write_results(out: Path, results: dict, extra_lines: list[str] = ()) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "results.json", out / "results.md"
    write_json(json_path, results, indent=2)
    write_text(md_path, markdown(results) + "".join(line + "\n" for line in extra_lines))
    return json_path, md_path
