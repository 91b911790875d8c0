"""DAgger on the embedded game: a trained agent drives while the expert labels every frame.

Behaviour cloning trains on the states the expert visits; the agent's own small errors take it to
states nobody showed it how to leave. DAgger (Ross, Gordon & Bagnell 2011) records the agent driving,
stores the keys the expert would have pressed in each of those states, and trains again on the union.

    record_dagger("runs/train/best.pt", "runs/recordings", minutes=3, seed=500)
"""
from pathlib import Path

import numpy as np

from drive.agent import Agent, load_agent
from drive.controller import ControllerSettings, decide
from drive.carracing.evaluate import check_agent_plays_carracing
from drive.carracing.expert_recording import RecordSettings, record_expert


class AgentPilot:
    """The agent as a pilot for drive.carracing.expert_recording: one decision per recorded frame, on game time,
    with the live loop's ring buffer and selection by time, so it sees what it would see driving."""

    name = "dagger"

    def __init__(self, agent: Agent, controller: ControllerSettings, interval_s: float):
        self.agent, self.controller, self.interval_s = agent, controller, interval_s

    def reset(self) -> None:
        self.agent.reset()

    def __call__(self, frame: np.ndarray, t: float) -> dict[str, float]:
        return decide(self.agent.step(frame, t), self.interval_s, self.controller)


def record_dagger(ckpt: str | Path, out_dir: str | Path, minutes: float, seed: int, settings: RecordSettings,
                  controller: dict | None = None, weights: str | None = None, device: str = "auto",
                  on_episode=None, log=print) -> list[Path]:
    """`minutes` of the checkpoint's agent driving tracks seed, seed+1, ..., recorded with the expert's
    keys (dagger-seed{seed}-*.zarr in out_dir). settings: as the expert demos were recorded (the same
    latency; pushes are usually off: the agent makes its own mistakes). controller: overrides of the
    checkpoint's defaults. Use track seeds apart from the training and the held-out ones."""
    agent = load_agent(ckpt, weights, device, log=log)
    check_agent_plays_carracing(agent, settings.game)
    pilot = AgentPilot(agent, agent.controller(**(controller or {})), 1.0 / agent.profile.fps)
    return record_expert(out_dir, minutes, seed=seed, settings=settings, on_episode=on_episode, pilot=pilot)
