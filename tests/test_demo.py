"""`make demo` end to end at toy size: expert demos, stage 1, a pilot head per DAgger round, the rounds,
the final head, the table; a second run finds every step done."""
import os
import shutil
from contextlib import contextmanager
from dataclasses import replace

import pytest
import torch

from data.episode import Episode
from data.errors import UserError
from data.profiles import load_profile
from drive.carracing import demo
from extract_features.device import cpu_features_text, cpu_model, precision_name
from extract_features.models import RAW_PATCHES
from tests.test_agent import write_profile_episode
from drive.carracing.workers import in_processes, own_process
from drive.carracing.demo import (CpuPlan, DemoSettings, StageTimes, cpu_plan, dagger_round, drive_held_out,
                                  learn, run, train_settings)


def test_demo_runs_every_stage_and_resumes(tmp_path, capsys):
    s = DemoSettings(out=tmp_path / "demo", minutes=1.0, backbone=RAW_PATCHES, pca_dim=8, steps=20, pilot_steps=10,
                     dagger_rounds=2, dagger_minutes=0.2, tracks=1)
    report = run(s)
    episodes = [Episode(p) for p in sorted((s.out / "recordings").iterdir())]
    sources = [ep.attrs["source"] for ep in episodes]
    assert "expert" in sources and sources.count("dagger") >= 2
    assert sum(len(ep) for ep in episodes if ep.attrs["source"] == "dagger") == 240  # 2 rounds of 0.2 min at 10 fps
    assert {ep.attrs["track_seed"] for ep in episodes if ep.attrs["source"] == "dagger"} >= {500, 600}
    assert all(ep.attrs["latency"] == s.latency for ep in episodes)
    for name in ("train-round0/best.pt", "train-round1/best.pt", "train/best.pt", "train/curves.png", "drive.mp4", "results.md"):
        assert (s.out / name).exists(), name
    assert "| all 1 | agent |" in report and "| all 1 | expert |" in report and "2 DAgger round(s)" in report
    # where the time went, and on what: the CPU features torch found and the precision they gave
    stages = ["recording the expert", "stage 1 (backbone over the recordings)", "training", "DAgger: the agent drives",
              "held-out tracks: the agent drives", "held-out tracks: the expert drives", "all"]
    assert [line.split(" | ")[0][2:] for line in report.split("| stage | seconds |")[1].strip().splitlines()[1:]] == stages
    out = capsys.readouterr().out
    assert f"machine: no GPU; CPU {cpu_model()}" in out and f"{cpu_features_text()}; backbone in " in out

    run(s)  # everything is there: nothing is recorded or trained again
    out = capsys.readouterr().out
    assert "recordings already in" in out and "DAgger round 2 already recorded" in out
    assert out.count("head already trained") == 3 and "training the head" not in out


def test_demo_refuses_a_folder_of_frames_of_another_size(tmp_path):
    old = tmp_path / "demo" / "recordings" / "expert-seed0-000-regular.zarr"
    write_profile_episode(old, "gta5", n=4)  # 240x180, as an earlier demo's 240x160 would be
    h, w, _ = load_profile("carracing").frame_shape
    with pytest.raises(UserError, match=rf"expert-seed0-000-regular\.zarr: frames of 240x180, but the demo now records "
                                        rf"{w}x{h}; remove .*demo or pass another --out"):
        run(DemoSettings(out=tmp_path / "demo"))
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["recordings"]


def test_stage_times_add_up_the_rounds_of_each_stage():
    now = iter([0.0, 2.0, 2.0, 7.0, 10.0, 11.5])
    times = StageTimes(clock=lambda: next(now))
    with times("stage 1"):
        pass
    with times("training"):
        pass
    with times("stage 1"):
        pass
    assert times.seconds == {"stage 1": 3.5, "training": 5.0}
    assert times.table().splitlines()[2:] == ["| stage 1 | 4 |", "| training | 5 |", "| all | 8 |"]


def test_one_thread_per_core_and_a_worker_per_core_on_a_two_core_cpu_without_fast_bf16(monkeypatch):
    cpu, d = torch.device("cpu"), DemoSettings()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")  # an AVX2-only CPU
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert cpu_plan(d, cpu, cores=2) == CpuPlan(threads=1, workers=2) and cpu_plan(d, cpu, cores=1) == CpuPlan(1, 1)
    assert cpu_plan(d, cpu, cores=2).train_threads == 2  # training, one process, takes every worker's thread
    assert cpu_plan(d, cpu, cores=4) == CpuPlan(2, 2)  # more cores: torch's choice of threads, and cores filled
    assert cpu_plan(DemoSettings(threads=2), cpu, cores=2) == CpuPlan(2, 1)  # --threads wins
    assert cpu_plan(DemoSettings(workers=1), cpu, cores=2) == CpuPlan(1, 1)  # --workers too
    assert cpu_plan(d, torch.device("cuda"), cores=2).workers == 1
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert cpu_plan(d, cpu, cores=2) == CpuPlan(1, 2)  # AVX512-BF16 without AMX: int8, as on AVX2
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert cpu_plan(d, cpu, cores=2) == CpuPlan(2, 1)  # AMX: bf16 on torch's threads


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A toy demo's final head and settings (raw patches, 1 held-out track)."""
    s = DemoSettings(out=tmp_path_factory.mktemp("demo") / "demo", minutes=0.5, backbone=RAW_PATCHES, pca_dim=8,
                     steps=10, pilot_steps=10, dagger_rounds=0, tracks=1, workers=1)
    _, _, ckpt = learn(s, lambda *a: None)
    return s, ckpt


def test_two_workers_drive_the_held_out_tracks_as_one_does(trained):
    s, ckpt = trained
    s = replace(s, tracks=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker process runs
    try:
        alone = drive_held_out(s, ckpt)
    finally:
        torch.set_num_threads(threads)
    (s.out / "drive.mp4").unlink()
    together = drive_held_out(s, ckpt, workers=2, threads=1)
    assert [r.seed for r in together] == [1000, 1001, 1002]
    assert [(r.reward, r.steps) for r in together] == [(r.reward, r.steps) for r in alone]
    assert (s.out / "drive.mp4").exists()  # the first track's video, from the first worker


def test_a_dagger_round_in_two_processes_records_its_minutes_on_tracks_of_its_own_and_resumes(trained, capsys):
    s, ckpt = trained
    s = replace(s, dagger_minutes=1.0)  # two halves of 0.5 min
    dagger_round(s, ckpt, 1, print, workers=2, threads=1)
    assert "2 processes at once" in capsys.readouterr().out
    recordings = s.out / "recordings"
    # 300 frames each; a track lasts at most 200 (the game's 20 s), so one process would be on track 502 by then
    parts = {seed: [Episode(p) for p in sorted(recordings.glob(f"dagger-seed{seed}-*"))] for seed in (500, 502)}
    assert all(parts.values()) and sum(len(ep) for eps in parts.values() for ep in eps) == 600
    assert [eps[0].attrs["track_seed"] for eps in parts.values()] == [500, 502]
    for p in recordings.glob("dagger-seed502-*"):  # the second process was killed before it wrote anything
        shutil.rmtree(p)
    dagger_round(s, ckpt, 1, print, workers=2, threads=1)
    assert "processes at once" not in capsys.readouterr().out  # only the missing half
    assert sum(len(Episode(p)) for p in recordings.glob("dagger-seed502-*")) == 300
    dagger_round(s, ckpt, 1, print, workers=2, threads=1)
    assert "DAgger round 1 already recorded" in capsys.readouterr().out

    one = replace(s, out=s.out.parent / "one-process")
    shutil.copytree(s.out, one.out, ignore=shutil.ignore_patterns("dagger-*"))
    dagger_round(one, ckpt, 1, print, workers=1)  # all 600 frames by one process, tracks 500+
    capsys.readouterr()
    dagger_round(one, ckpt, 1, print, workers=2, threads=1)  # resumed with two: nothing to add
    assert "DAgger round 1 already recorded" in capsys.readouterr().out
    assert not list((one.out / "recordings").glob("dagger-seed502-*"))


def refuse(flag: str) -> None:
    raise UserError(f"{flag}: refused in a worker process")


def test_a_user_error_in_a_worker_process_reaches_the_caller_as_itself():
    with pytest.raises(UserError, match="--b: refused in a worker process"):
        in_processes(refuse, [dict(flag="--b"), dict(flag="--b")], threads=1)
    assert in_processes(dict, [dict(a=1)], threads=1) == [{"a": 1}]  # one job: in this process


def test_the_demo_seed_sets_every_heads_initialisation_and_keeps_the_sampling_order(tmp_path):
    seeded = train_settings(DemoSettings(seed=3), tmp_path / "cache", tmp_path / "run")
    default = train_settings(DemoSettings(), tmp_path / "cache", tmp_path / "run")
    assert seeded.seed == 3 and default.seed == 0 and seeded.sampler == default.sampler


def test_training_runs_in_one_process_of_its_own_on_every_workers_thread_only_with_one_thread_workers(tmp_path,
                                                                                                        monkeypatch):
    opened = []

    @contextmanager
    def own_process(threads, env):
        opened.append((threads, env))
        yield lambda fn, **job: fn(**job)

    here = []
    monkeypatch.setattr(demo, "own_process", own_process)
    monkeypatch.setattr(demo, "train", lambda s: here.append(s))
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with demo.training_process(CpuPlan(threads=1, workers=2)) as trainer:
        assert trainer is not demo.train
        trainer("round 0")
        trainer("round 1")
    assert opened == [(2, {"OMP_WAIT_POLICY": "PASSIVE"})] and here == ["round 0", "round 1"]  # one process, all rounds
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice wins
    with demo.training_process(CpuPlan(threads=1, workers=2)):
        pass
    assert opened[-1] == (2, {"OMP_WAIT_POLICY": "ACTIVE"})
    for plan in (CpuPlan(threads=2, workers=1), None):  # a bf16 CPU, a GPU: here, as before
        with demo.training_process(plan) as trainer:
            assert trainer is demo.train
    assert len(opened) == 2


def test_a_round_trains_with_the_trainer_given_into_its_folder(tmp_path):
    trained = []
    s = DemoSettings(out=tmp_path)
    assert demo.train_round(s, tmp_path / "cache", 0, lambda *a: None, trained.append) == tmp_path / "train-round0" / "best.pt"
    assert demo.train_round(s, tmp_path / "cache", s.dagger_rounds, lambda *a: None, trained.append).parent == tmp_path / "train"
    assert [t.optim.max_steps for t in trained] == [s.pilot_steps, s.steps]
    (tmp_path / "train-round0").mkdir(exist_ok=True)
    (tmp_path / "train-round0" / "best.pt").write_bytes(b"")
    demo.train_round(s, tmp_path / "cache", 0, lambda *a: None, trained.append)  # trained already: kept
    assert len(trained) == 2


def environment_and_threads(name: str) -> tuple[str | None, int, int]:
    return os.environ.get(name), torch.get_num_threads(), os.getpid()


def test_a_process_of_its_own_gets_the_environment_and_threads_asked_keeps_them_and_leaves_ours_alone(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("DEMO_TEST_KEPT", "ours")
    with own_process(2, env={"OMP_WAIT_POLICY": "PASSIVE", "DEMO_TEST_KEPT": "theirs"}) as call:
        assert "OMP_WAIT_POLICY" not in os.environ and os.environ["DEMO_TEST_KEPT"] == "ours"
        first = call(environment_and_threads, name="OMP_WAIT_POLICY")
        second = call(environment_and_threads, name="DEMO_TEST_KEPT")
    assert first[:2] == ("PASSIVE", 2) and second[:2] == ("theirs", 2)
    assert first[2] == second[2] != os.getpid()  # the same process for every call, not this one


@pytest.mark.parametrize("capability, avx512_bf16, amx, backbone, precision, why", [
    ("AVX2", False, False, "dinov2_vits14", "int8", "bf16 would be several times slower here"),  # AVX2 only
    ("AVX512", True, False, "dinov2_vits14", "int8", "faster here than bf16 without AMX"),  # a Zen 4
    ("AVX512", True, True, "dinov2_vits14", "bf16", None),
    ("AVX2", False, False, RAW_PATCHES, "fp32", None),  # no backbone to quantize
])
def test_the_demo_extracts_in_the_precision_the_cpu_is_fast_at(tmp_path, monkeypatch, capability, avx512_bf16, amx,
                                                                backbone, precision, why):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    asked = []
    monkeypatch.setattr(demo, "extract", asked.append)
    demo.features(DemoSettings(out=tmp_path, backbone=backbone), lambda *a: None)
    assert precision_name(asked[0].bf16, asked[0].int8_backbone) == precision
    if backbone != RAW_PATCHES:
        line = demo.machine_line(CpuPlan(1, 2))
        assert f"backbone in {precision}" in line and (why is None) == ("Linear layers;" not in line)
        assert why is None or line.endswith(f"(dynamic, Linear layers; {why})")


def test_the_expert_demos_in_two_processes_share_out_the_tracks_one_would_drive(tmp_path, capsys):
    s = DemoSettings(out=tmp_path / "demo", minutes=1.0)
    recordings = demo.record(s, print, workers=2)
    assert "2 processes at once" in capsys.readouterr().out
    episodes = [Episode(p) for p in sorted(recordings.iterdir())]
    assert sum(len(ep) for ep in episodes) == 600  # 1 min at 10 fps, 0.5 min each
    # 300 frames each and a track lasts at most 200, so one process would be on track 2 by the second half
    first = {part: min(ep.attrs["track_seed"] for ep in episodes if ep.path.name.startswith(f"expert-{part}-"))
             for part in ("seed0", "seed2")}
    assert first == {"seed0": 0, "seed2": 2} and {p.name.split("-")[1] for p in recordings.iterdir()} == set(first)
    demo.record(s, print, workers=2)
    assert "recordings already in" in capsys.readouterr().out
