"""tools.replay: a checkpoint run offline over a recording, sequences picked as the live loop picks them."""
import re

import cv2
import numpy as np
import pytest
import torch

from data.episode import Episode
from data.errors import UserError
from data.profiles import load_profile
from drive.agent import load_agent
from tests.test_agent import make_checkpoint, write_profile_episode
from tools.replay import label_rows, main, replay_probs


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("replay"), profile="carracing", stride_s=0.2)[0]


def read_video(path):
    video, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = video.read()
        if not ok:
            return frames
        frames.append(frame)


def test_replay_writes_a_video_frame_per_recorded_frame_and_a_timeline(ckpt, tmp_path, capsys):
    write_profile_episode(tmp_path / "stuck.zarr", "carracing", n=24, pad_frames=5, seed=3)
    main(["--ckpt", str(ckpt), str(tmp_path / "stuck.zarr"), "--video", str(tmp_path / "r.mp4"),
          "--timeline", str(tmp_path / "r.png")])
    frames = read_video(tmp_path / "r.mp4")
    assert len(frames) == 24
    h, w, _ = load_profile("carracing").frame_shape
    scale = -(-600 // w)  # enlarged by a whole factor to >= 600 px wide, panel below
    assert scale > 1 and frames[0].shape == (h * scale + 64, w * scale, 3)
    timeline = cv2.imread(str(tmp_path / "r.png"))
    assert timeline is not None and timeline.shape[0] > 300 and timeline.shape[1] > 600
    out = capsys.readouterr().out
    assert "24 frames ->" in out and "(19 frames after padding)" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.mp4", "r.png", "stuck.zarr"]


def test_sequences_are_picked_by_timestamp_like_the_live_loop(ckpt, tmp_path):
    write_profile_episode(tmp_path / "ep.zarr", "carracing", n=12, fps=10.0, seed=4, noise=True)
    agent = load_agent(ckpt, device="cpu", log=lambda *a: None)
    episode = Episode(tmp_path / "ep.zarr")
    probs = replay_probs(agent, episode, batch_size=5)  # batches cut across sequences
    features = agent.frame_features(episode.frames[:])
    # 10 fps, stride 0.2 s, 3 frames: [i-4, i-2, i]; with short history the ring repeats the oldest pick
    expected = {0: [0, 0, 0], 1: [0, 0, 1], 2: [0, 0, 2], 3: [0, 1, 3]} | {i: [i - 4, i - 2, i] for i in range(4, 12)}
    for i, rows in expected.items():
        direct = torch.sigmoid(agent.head_fn(features[rows][None])).numpy()[0]
        np.testing.assert_allclose(probs[i], direct, atol=1e-4)
    assert probs.shape == (12, 4) and np.all((probs > 0) & (probs < 1))
    wrong = torch.sigmoid(agent.head_fn(features[[7, 8, 9]][None])).numpy()[0]  # stride of one frame
    assert np.abs(probs[9] - wrong).max() > 1e-3


def test_labels_are_the_keys_after_the_label_shift():
    t = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    np.testing.assert_array_equal(label_rows(t, 0.0), [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(label_rows(t, 0.25), [3, 4, 4, 4, 4])  # past the end: the last frame
    np.testing.assert_array_equal(label_rows(t, 0.2), [2, 3, 4, 4, 4])


def test_bad_input_is_refused_and_leaves_nothing(ckpt, tmp_path):
    write_profile_episode(tmp_path / "gta.zarr", "gta5", n=6)
    out = tmp_path / "out"
    carracing = re.escape(str(load_profile("carracing").frame_shape))
    with pytest.raises(UserError, match=rf"gta\.zarr: frames \(180, 240, 3\) differ from the {carracing}"):
        main(["--ckpt", str(ckpt), str(tmp_path / "gta.zarr"), "--video", str(out / "r.mp4"), "--timeline", str(out / "r.png")])
    assert not out.exists() or list(out.iterdir()) == []
    with pytest.raises(UserError, match="--video .*must end in .mp4"):
        main(["--ckpt", str(ckpt), str(tmp_path / "gta.zarr"), "--video", str(out / "r.avi")])
    with pytest.raises(UserError, match="--timeline .*must end in .png"):
        main(["--ckpt", str(ckpt), str(tmp_path / "gta.zarr"), "--video", str(out / "r.mp4"), "--timeline", "t.jpg"])
    with pytest.raises(UserError, match="not an episode store"):
        main(["--ckpt", str(ckpt), str(tmp_path), "--video", str(out / "r.mp4")])
