"""Screen capture of the game's client area: window finding on Windows, mss everywhere.

Used by the recorder and by the live loop, so both see the same pixels.
"""
import sys
from dataclasses import dataclass

import numpy as np

from data.errors import UserError


@dataclass(frozen=True)
class Region:
    left: int
    top: int
    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> "Region":
        """'LEFT,TOP,WIDTH,HEIGHT' in screen pixels."""
        try:
            left, top, width, height = (int(v) for v in text.split(","))
        except ValueError:
            raise UserError(f"--region {text!r}: expected LEFT,TOP,WIDTH,HEIGHT in pixels, e.g. 0,0,800,600") from None
        if width <= 0 or height <= 0:
            raise UserError(f"--region {text!r}: width and height must be positive")
        return cls(left, top, width, height)


def find_window_region(title: str) -> Region:
    """The client area (no title bar or borders) of the window with this exact title, in physical pixels."""
    if sys.platform != "win32":
        raise UserError("finding the game window works on Windows only; pass --region LEFT,TOP,WIDTH,HEIGHT")
    import ctypes
    from ctypes import wintypes

    user32 = ctypes.windll.user32
    try:  # per-monitor DPI awareness, so the rectangle is in real pixels on scaled displays
        user32.SetProcessDpiAwarenessContext(ctypes.c_void_p(-4))
    except (AttributeError, OSError):
        ctypes.windll.shcore.SetProcessDpiAwareness(2)
    hwnd = user32.FindWindowW(None, title)
    if not hwnd:
        raise UserError(f"no window titled {title!r}: start the game (borderless or windowed) or pass --region")
    rect, origin = wintypes.RECT(), wintypes.POINT(0, 0)
    user32.GetClientRect(hwnd, ctypes.byref(rect))
    user32.ClientToScreen(hwnd, ctypes.byref(origin))
    return Region(origin.x, origin.y, rect.right - rect.left, rect.bottom - rect.top)


class ScreenSource:
    """Grabs one region of the screen as an RGB uint8 array (H, W, 3)."""

    def __init__(self, region: Region):
        import mss

        self.region = region
        try:
            self._sct = mss.mss()
        except Exception as e:  # no display (a Linux server), no permission: mss raises its own types
            raise UserError(f"cannot capture the screen ({type(e).__name__}: {e}); run on the machine that "
                            f"shows the game") from None
        self._box = {"left": region.left, "top": region.top, "width": region.width, "height": region.height}

    def grab(self) -> np.ndarray:
        shot = np.asarray(self._sct.grab(self._box))  # BGRA
        return np.ascontiguousarray(shot[:, :, 2::-1])
