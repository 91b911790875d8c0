"""Run a checkpoint over a recorded episode offline: a video with the predicted and recorded keys on each
frame, and a timeline of p(w, a, s, d) against the recorded keys.

    python -m tools.replay --ckpt runs/train/best.pt runs/recordings/expert-seed0-000-regular.zarr --video replay.mp4
    python -m tools.replay --ckpt runs/train/best.pt EPISODE --video replay.mp4 --timeline replay.png

Features are made per frame as the live loop makes them (the checkpoint's backbone, preprocessing and
reduction), and each frame's sequence is picked from the frames before it by their timestamps at the
checkpoint's stride, as the live loop's ring buffer does. The recorded keys shown are the ones the
head was trained to predict: the first frame at or after the checkpoint's label shift.
"""
import argparse
import math
from pathlib import Path

import numpy as np

from data.atomic import save_figure
from data.episode import Episode
from data.errors import UserError, run_cli
from data.flags import Renamed
from data.labels import KEYS
from data.paths import check_writable
from data.progress import progress
from drive.agent import Agent, load_agent
from drive.controller import decide
from drive.video import VideoWriter, annotate, check_video_path


def label_rows(t: np.ndarray, shift_s: float) -> np.ndarray:
    """For each frame, the row whose keys the head predicts (as the training sampler picks it)."""
    return np.minimum(np.searchsorted(t, t + shift_s - 1e-9), len(t) - 1)


def replay_probs(agent: Agent, episode: Episode, batch_size: int = 32, on_batch=None) -> np.ndarray:
    """(T, 4) sigmoid probabilities for every frame. on_batch(start, frames, probs) sees each batch."""
    t = episode.t[:]
    agent.reset()
    out = []
    for start in range(0, len(episode), batch_size):
        frames = episode.frames[start:start + batch_size]
        features = agent.frame_features(frames)  # the backbone in batches; the head as the live loop runs it
        probs = np.stack([agent.step_features(f, float(t[start + j])) for j, f in enumerate(features)])
        if on_batch is not None:
            on_batch(start, frames, probs)
        out.append(probs)
    return np.concatenate(out) if out else np.zeros((0, 4), np.float32)


def pressed_shares(probs: np.ndarray, t: np.ndarray, agent: Agent) -> np.ndarray:
    """(T, 4) what the controller would press: 1 for w/s held, a/d as a share of the frame interval."""
    controller = agent.controller()
    gaps = np.diff(t, prepend=t[0] - (t[1] - t[0] if len(t) > 1 else 0.1))
    out = np.zeros_like(probs)
    for i, (p, gap) in enumerate(zip(probs, gaps)):
        hold = decide(p, float(gap), controller)
        out[i] = [1.0 if math.isinf(hold[k]) else min(1.0, hold[k] / gap) if gap > 0 else 0.0 for k in KEYS]
    return out


def agreement(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Per-key accuracy at 0.5, exact match over all four keys, and the mean BCE."""
    guess = probs >= 0.5
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    bce = -(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean()
    return {**{f"acc_{k}": float((guess[:, i] == labels[:, i]).mean()) for i, k in enumerate(KEYS)},
            "exact_match": float((guess == labels.astype(bool)).all(axis=1).mean()), "bce": float(bce)}


def plot_timeline(path: Path, t: np.ndarray, probs: np.ndarray, labels: np.ndarray, pad_frames: int, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(12, 7), sharex=True)
    for i, (ax, key) in enumerate(zip(axes, KEYS)):
        ax.fill_between(t, 0, labels[:, i], step="post", color="tab:green", alpha=0.3, linewidth=0, label="recorded")
        ax.plot(t, probs[:, i], color="tab:blue", linewidth=1, label=f"p({key})")
        ax.axhline(0.5, color="grey", linewidth=0.5, linestyle=":")
        if pad_frames:
            ax.axvspan(t[0], t[min(pad_frames, len(t) - 1)], color="grey", alpha=0.2, linewidth=0)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(key)
        ax.legend(loc="upper right", fontsize=7)
    axes[-1].set_xlabel("seconds" + (" (grey: stuck padding)" if pad_frames else ""))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    try:
        save_figure(path, fig, dpi=100)
    finally:
        plt.close(fig)


def replay(agent: Agent, episode: Episode, out: Path, timeline: Path | None = None, batch_size: int = 32,
           log=print) -> dict[str, float]:
    """Write the video (and the timeline); returns the agreement with the recorded keys (padding excluded)."""
    if episode.frame_shape != agent.profile.frame_shape:
        raise UserError(f"{episode.path}: frames {episode.frame_shape} differ from the {agent.profile.frame_shape} of "
                        f"{agent.path} (profile {agent.profile.name}); replay an episode of that game")
    if len(episode) == 0:
        raise UserError(f"{episode.path}: holds no frames")
    t, keys = episode.t[:], episode.keys[:]
    shift = agent.contract.label_shift_s
    labels = keys[label_rows(t, shift)]
    scale = max(1, math.ceil(600 / episode.frame_shape[1]))
    fps = episode.fps if episode.fps > 0 else 10.0

    with VideoWriter(out, fps, flag="--video") as video, progress(total=len(episode), desc="replay", unit="frame") as bar:
        def write(start, frames, probs):
            shares = pressed_shares(probs, t[start:start + len(probs)], agent)
            for j, frame in enumerate(frames):
                i = start + j
                lines = (f"{episode.path.name[:40]}", f"frame {i}  t {t[i]:.2f} s",
                         "stuck padding" if i < episode.pad_frames else f"recorded at t+{shift:g} s")
                video.write(annotate(frame, probs[j], shares[j], labels[i], lines, scale))
            bar.update(len(frames))

        probs = replay_probs(agent, episode, batch_size, on_batch=write)
    scores = agreement(probs[episode.pad_frames:], labels[episode.pad_frames:]) \
        if len(episode) > episode.pad_frames else {}
    if timeline is not None:
        plot_timeline(timeline, t - t[0], probs, labels, episode.pad_frames,
                      f"{episode.path.name}: {agent.path} (label shift {shift:g} s, stride {agent.stride_s:g} s)"
                      + (f"\nbackbone {agent.extractor.backbone.weights_label}" if agent.extractor.backbone.is_random else ""))
    return scores


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.replay", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("episode", type=Path, help="a recorded episode (.zarr)")
    p.add_argument("--ckpt", type=Path, required=True, help="checkpoint from python -m train_head")
    p.add_argument("--video", "--out", dest="out", action=Renamed, type=Path, required=True,
                   help="video to write (.mp4, H.264); --out is its deprecated old name")
    p.add_argument("--timeline", type=Path, help="also write a PNG timeline of p(w, a, s, d) vs the recorded keys")
    p.add_argument("--weights", help="backbone weights (default: what --weights said at feature extraction)")
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    p.add_argument("--batch-size", type=int, default=32, help="frames per backbone call (default: %(default)s)")
    args = p.parse_args(argv)
    check_video_path(args.out, "--video")
    if args.timeline is not None:
        check_writable(args.timeline, "--timeline", (".png",))
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 1")
    episode = Episode(args.episode)
    agent = load_agent(args.ckpt, args.weights, args.device)
    scores = replay(agent, episode, args.out, args.timeline, args.batch_size)
    print(f"{len(episode)} frames -> {args.out}" + (f", {args.timeline}" if args.timeline else ""))
    if scores:
        print(f"vs recorded keys ({len(episode) - episode.pad_frames} frames after padding): exact match "
              f"{scores['exact_match']:.1%}, BCE {scores['bce']:.3f}, accuracy "
              + ", ".join(f"{k} {scores[f'acc_{k}']:.1%}" for k in KEYS))


if __name__ == "__main__":
    run_cli(main)
