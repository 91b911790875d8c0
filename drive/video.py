"""MP4 videos of drives and replays: frames with the key probabilities and keys drawn on them.

Encoded H.264 (yuv420p) with PyAV, whose wheels bundle ffmpeg and libx264, so browsers and GitHub play
them (cv2's 'mp4v' is MPEG-4 part 2, which they do not). Written to a hidden file beside the target and
renamed on a clean close, so a failed run leaves no half-written video.
"""
import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from data.errors import UserError
from data.paths import check_writable
from data.labels import KEYS

PANEL_HEIGHT = 64
ON, OFF, BAR, TEXT = (60, 200, 60), (70, 70, 70), (230, 180, 40), (235, 235, 235)


def check_video_path(path: str | Path, flag: str = "--video") -> Path:
    return check_writable(path, flag, (".mp4",))


class VideoWriter:
    """RGB uint8 frames (H, W, 3) of one size → an H.264 .mp4 at `fps`. Use as a context manager.
    An odd width or height is padded by one repeated edge pixel (yuv420p needs even sizes)."""

    def __init__(self, path: str | Path, fps: float, flag: str = "--video"):
        self.path = check_video_path(path, flag)
        self.fps = float(fps)
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.partial.mp4")
        self.container = None
        self.stream = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        if self.container is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.size = (w, h)
            try:
                self.container = av.open(str(self.tmp), mode="w")
            except OSError as e:
                raise UserError(f"{self.path}: cannot write mp4 here ({e.strerror or e}); choose another path") from None
            self.stream = self.container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
            self.stream.width, self.stream.height = w + w % 2, h + h % 2
            self.stream.pix_fmt = "yuv420p"
        if (w, h) != self.size:
            raise ValueError(f"frame {w}x{h} differs from the video's {self.size[0]}x{self.size[1]}")
        if w % 2 or h % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, dtype=np.uint8), format="rgb24")
        self.container.mux(self.stream.encode(picture))
        self.frames += 1

    def close(self, keep: bool = True) -> None:
        if self.container is not None:
            if keep:
                self.container.mux(self.stream.encode())  # flush the encoder's delayed frames
            self.container.close()
            self.container = None
        if keep and self.frames:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(keep=exc_type is None)


def annotate(frame: np.ndarray, probs, keys, recorded=None, lines: tuple[str, ...] = (), scale: int = 1) -> np.ndarray:
    """The frame (enlarged `scale` times) above a panel: a bar per key with p(key), the key lit when
    pressed (`keys`: 4 values in [0, 1], a share lights it partly), a second row of boxes for
    `recorded` keys, and text lines on the right."""
    if scale != 1:
        frame = cv2.resize(frame, (frame.shape[1] * scale, frame.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    h, w = frame.shape[:2]
    panel = np.full((PANEL_HEIGHT, w, 3), 25, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i, key in enumerate(KEYS):
        x = 8 + i * 58
        share = float(np.clip(keys[i], 0.0, 1.0))
        color = tuple(int(OFF[c] + share * (ON[c] - OFF[c])) for c in range(3))
        cv2.rectangle(panel, (x, 4), (x + 24, 28), color, -1)
        cv2.putText(panel, key, (x + 6, 22), font, 0.55, TEXT, 1, cv2.LINE_AA)
        top = 4 + round(24 * (1 - float(probs[i])))
        cv2.rectangle(panel, (x + 28, 4), (x + 38, 28), OFF, 1)
        cv2.rectangle(panel, (x + 28, top), (x + 38, 28), BAR, -1)
        cv2.putText(panel, f"{float(probs[i]):.2f}", (x, 44), font, 0.4, TEXT, 1, cv2.LINE_AA)
        if recorded is not None:
            cv2.rectangle(panel, (x, 50), (x + 24, 60), ON if recorded[i] else OFF, -1)
    if recorded is not None:
        cv2.putText(panel, "recorded", (8 + 4 * 58, 59), font, 0.35, TEXT, 1, cv2.LINE_AA)
    for j, line in enumerate(lines[:4]):
        cv2.putText(panel, line, (8 + 4 * 58 + 70, 14 + 15 * j), font, 0.4, TEXT, 1, cv2.LINE_AA)
    return np.vstack([frame, panel])
