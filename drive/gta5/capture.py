"""Screen capture of the game's client area with mss, following the window when it moves.

Used by the recorder (tools/record.py) and by the live loop, so both see the same pixels.
"""
from typing import Callable

import numpy as np

from data.atomic import write_image
from data.errors import UserError
from data.profiles import to_frame_size
from data.screen import Region
from drive.gta5.window import GameWindow

CAPTURE_FIX = ("run this on the desktop where the game is shown (not over SSH or in a service; on Linux set "
               "DISPLAY, e.g. DISPLAY=:0), or check that --region lies on the screen")


class ScreenSource:
    """Grabs one region of the screen as an RGB uint8 array (H, W, 3); capture failures are UserErrors."""

    def __init__(self, region: Region):
        import mss
        import mss.exception

        self._errors = mss.exception.ScreenShotError
        self.region = region
        try:
            self._sct = (getattr(mss, "MSS", None) or mss.mss)()  # mss 10 renamed mss.mss to mss.MSS
        except self._errors as e:
            raise UserError(f"screen capture failed ({type(e).__name__}: {e}): {CAPTURE_FIX}") from None
        self.grab()  # fail now, before any countdown, when there is nothing to capture

    def move(self, region: Region) -> None:
        self.region = region

    def grab(self) -> np.ndarray:
        r = self.region
        try:
            shot = np.asarray(self._sct.grab({"left": r.left, "top": r.top, "width": r.width, "height": r.height}))
        except self._errors as e:
            raise UserError(f"screen capture of {r.width}x{r.height} at ({r.left}, {r.top}) failed "
                            f"({type(e).__name__}: {e}): {CAPTURE_FIX}") from None
        return np.ascontiguousarray(shot[:, :, 2::-1])  # BGRA → RGB


class WindowCapture:
    """Frames of a game window's client area at the stored frame size; follows the window when it moves
    (the new rectangle is logged) and saves the first frame, so the user sees what the agent sees."""

    def __init__(self, screen: ScreenSource, frame_size: tuple[int, int], window: GameWindow | None = None,
                 first_frame_path=None, log: Callable[[str], None] = print):
        self.screen, self.frame_size, self.window = screen, frame_size, window
        self.first_frame_path, self.log = first_frame_path, log
        self.frames = 0

    def grab(self) -> np.ndarray:
        if self.window is not None:
            region = self.window.region()
            if region != self.screen.region:
                self.log(f"game window moved: capturing {describe(region)}")
                self.screen.move(region)
        frame = self.screen.grab()
        frame = to_frame_size(frame, self.frame_size)  # as the recorder stores frames
        if self.frames == 0 and self.first_frame_path is not None:
            write_image(self.first_frame_path, frame)
            self.log(f"first frame the agent sees ({frame.shape[1]}x{frame.shape[0]}): {self.first_frame_path}")
        self.frames += 1
        return frame


def describe(region: Region) -> str:
    return f"{region.width}x{region.height} at ({region.left}, {region.top})"
