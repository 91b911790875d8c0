"""`make demo` end to end at toy size: expert demos, stage 1, a pilot head per DAgger round, the rounds,
the final head, the table; a second run finds every step done."""
from data.episode import Episode
from extract_features.backbone import RAW_PATCHES
from tools.demo import DemoSettings, run


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
