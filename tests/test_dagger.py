"""DAgger recordings: a pilot drives the embedded game, the expert's keys are stored."""
import math

import numpy as np
import pytest
import torch

from data.episode import Episode
from data.errors import UserError
from drive.carracing import expert_recording
from drive.agent import load_agent
from drive.carracing.game import CarRacingGame
from drive.controller import ControllerSettings
from drive.carracing.dagger import AgentPilot, record_dagger
from drive.carracing.expert_recording import RecordSettings, frame_keys, held_seconds, record_expert
from tests.test_agent import make_checkpoint, silent


class HardLeft:
    """A pilot that only ever steers left at full throttle."""

    name = "dagger"

    def __init__(self):
        self.calls, self.resets = [], 0

    def reset(self):
        self.resets += 1

    def __call__(self, frame, t):
        self.calls.append(t)
        return {"w": math.inf, "a": math.inf, "s": 0.0, "d": 0.0}


def test_the_pilot_drives_and_the_experts_keys_are_stored(tmp_path, monkeypatch):
    wanted, sent = [], []
    decide, advance = expert_recording.Expert.decide, CarRacingGame.advance
    monkeypatch.setattr(expert_recording.Expert, "decide",
                        lambda self, *a: wanted.append(decide(self, *a)) or wanted[-1])
    monkeypatch.setattr(CarRacingGame, "advance", lambda self, seconds, hold=None: (
        sent.append(hold) if hold is not None else None, advance(self, seconds, hold))[1])
    pilot = HardLeft()
    settings = RecordSettings(stuck_share=0.0, label_rule="any", perturb_every=0.0)
    path, = record_expert(tmp_path, minutes=0.05, seed=5, settings=settings, pilot=pilot)
    ep = Episode(path)
    assert path.name == "dagger-seed5-000-regular.zarr" and ep.attrs["source"] == "dagger"
    assert pilot.resets == 1 and pilot.calls == pytest.approx(np.arange(30) * 0.1)
    assert all(h["a"] == math.inf for h in sent)  # the pilot's keys went to the game
    expected = [frame_keys(held_seconds(h, 0.0, 0.1) / 0.1, "any", None) for h in wanted]
    np.testing.assert_array_equal(ep.keys[:], expected)  # the expert's keys were stored
    assert ep.keys[:, 3].any()  # the expert steers right against the pilot's hard left
    with pytest.raises(UserError, match="dagger-seed5-"):
        record_expert(tmp_path, minutes=0.05, seed=5, settings=settings, pilot=pilot)
    record_expert(tmp_path, minutes=0.02, seed=5, settings=settings)  # expert episodes of the same seed may join


def test_agent_pilot_decides_from_the_ring_like_the_live_loop(tmp_path):
    ckpt, _ = make_checkpoint(tmp_path)
    agent = load_agent(ckpt, log=silent)
    pilot = AgentPilot(agent, ControllerSettings(proportional_gas=True), 0.1)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(5, *agent.profile.frame_shape), dtype=np.uint8)
    plans = [pilot(f, 0.1 * i) for i, f in enumerate(frames)]
    assert all(set(p) == {"w", "a", "s", "d"} and all(v >= 0 for v in p.values()) for p in plans)
    # the last decision saw frames 0, 2, 4 (stride 0.2 s), as the head does in training
    x = torch.stack([agent.features_fn(agent.preprocess_fn(frames[i])[None])[0] for i in (0, 2, 4)])[None]
    probs = torch.sigmoid(agent.head_fn(x)).reshape(-1).numpy()
    assert plans[-1]["w"] == pytest.approx(math.inf if probs[0] >= 0.99 else probs[0] * 0.1, rel=1e-4)
    pilot.reset()
    assert len(pilot.agent.stepper.ring) == 0


def test_record_dagger_refuses_a_checkpoint_of_another_game(tmp_path):
    ckpt, _ = make_checkpoint(tmp_path, profile="gta5")
    with pytest.raises(UserError, match="gta5"):
        record_dagger(ckpt, tmp_path / "dagger", minutes=0.02, seed=1, settings=RecordSettings(), log=silent)
    assert not (tmp_path / "dagger").exists()


def test_record_cli_dagger(tmp_path, capsys):
    from tools.record import main
    ckpt, _ = make_checkpoint(tmp_path)
    out = tmp_path / "dagger"
    main(["--game", "carracing", "--expert", "--dagger", str(ckpt), "--minutes", "0.02", "--seed", "9",
          "--latency", "0.1", "--out", str(out)])
    ep, = [Episode(p) for p in out.iterdir()]
    assert ep.path.name.startswith("dagger-seed9-") and len(ep) == 12
    assert ep.attrs["source"] == "dagger" and ep.attrs["latency"] == 0.1 and ep.attrs["perturb_every"] == 0.0
    assert "1 episodes" in capsys.readouterr().out
