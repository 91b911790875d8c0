"""MP4 videos of drives and replays: frames with the key probabilities and keys drawn on them.

Written with cv2.VideoWriter ('mp4v') to a hidden file beside the target and renamed on a clean
close, so a failed run leaves no half-written video.
"""
import os
from pathlib import Path

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
    """RGB uint8 frames (H, W, 3) of one size → an .mp4 at `fps`. Use as a context manager."""

    def __init__(self, path: str | Path, fps: float, flag: str = "--video"):
        self.path = check_video_path(path, flag)
        self.fps = float(fps)
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.partial.mp4")
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.size = (w, h)
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
            if not self.writer.isOpened():
                raise UserError(f"{self.path}: cannot write mp4 here (OpenCV has no mp4v encoder or the folder "
                                f"is read-only); choose another path")
        if (w, h) != self.size:
            raise ValueError(f"frame {w}x{h} differs from the video's {self.size[0]}x{self.size[1]}")
        self.writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self, keep: bool = True) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
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
