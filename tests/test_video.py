"""Videos are H.264 (browsers and GitHub play them), one frame per written frame, and atomic."""
import av
import numpy as np
import pytest

from drive.video import VideoWriter


def read_back(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return codec, frames


def gradient(i, h, w):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 3 + i * 10) % 256, (y * 4) % 256, np.full_like(x, 40 + i * 5)], -1).astype(np.uint8)


def test_video_is_h264_with_every_frame_and_its_picture(tmp_path):
    frames = [gradient(i, 48, 64) for i in range(13)]
    with VideoWriter(tmp_path / "v.mp4", fps=8) as video:
        for frame in frames:
            video.write(frame)
    codec, back = read_back(tmp_path / "v.mp4")
    assert codec == "h264" and len(back) == 13
    assert back[0].shape == (48, 64, 3)
    assert np.abs(back[5].astype(int) - frames[5]).mean() < 6  # lossy, but the same picture
    assert np.abs(back[5].astype(int) - frames[0]).mean() > 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_odd_size_is_padded_to_even(tmp_path):
    with VideoWriter(tmp_path / "v.mp4", fps=10) as video:
        for i in range(3):
            video.write(gradient(i, 47, 65))
    codec, back = read_back(tmp_path / "v.mp4")
    assert codec == "h264" and len(back) == 3 and back[0].shape == (48, 66, 3)


def test_failed_run_leaves_no_video(tmp_path):
    with pytest.raises(ValueError, match="differs"):
        with VideoWriter(tmp_path / "v.mp4", fps=10) as video:
            video.write(gradient(0, 48, 64))
            video.write(gradient(1, 50, 64))
    assert list(tmp_path.iterdir()) == []
