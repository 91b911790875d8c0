"""`make demo` end to end at toy size: expert demos, stage 1, a pilot head per DAgger round, the rounds,
the final head, the table; a second run finds every step done."""
import pytest

from data.episode import Episode
from data.errors import UserError
from data.profiles import load_profile
from extract_features.backbone import RAW_PATCHES
from tests.test_agent import write_profile_episode
from drive.carracing.demo import DemoSettings, run


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
    capsys.readouterr()

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
