"""Finding the game's window among the top-level windows, following it, and knowing when it has focus.

A window counts as the game only with the exact title AND one of the game's window classes ("grcWindow"
for GTA V, "sgaWindow" for its Enhanced edition): an Explorer window showing the "Grand Theft Auto V"
install folder has the title but the class CabinetWClass. With a capture size given, the client area
must have that size too (the model was trained on that view).
"""
from dataclasses import dataclass

from data.errors import UserError
from data.screen import Region
from drive.gta5.win32 import WindowsApi


@dataclass(frozen=True)
class WindowSpec:
    title: str
    classes: tuple[str, ...] = ()  # window classes that count as the game; empty: any
    size: tuple[int, int] | None = None  # client (width, height) required; None: any


def find_game_window(api: WindowsApi, spec: WindowSpec) -> int:
    """The handle of the one visible top-level game window; a one-line UserError naming the fix otherwise."""
    titled = [h for h in api.top_level_windows() if api.title(h) == spec.title and api.is_visible(h)]
    games = [h for h in titled if not spec.classes or api.class_name(h) in spec.classes]
    if not games:
        others = ", ".join(sorted({api.class_name(h) for h in titled}))
        seen = f" (windows with that title but class {others}, not {'/'.join(spec.classes)}: not the game)" if titled else ""
        raise UserError(f"no game window titled {spec.title!r}{seen}: start the game in windowed or borderless "
                        "mode, or pass --window TITLE / --region LEFT,TOP,WIDTH,HEIGHT")
    shown = [h for h in games if not api.is_minimised(h)]
    if not shown:
        raise UserError(f"the window {spec.title!r} is minimised: restore it, then start again")
    if spec.size is not None:
        sized = [h for h in shown if _size(api.client_region(h)) == spec.size]
        if not sized:
            region = api.client_region(shown[0])
            raise UserError(f"the window {spec.title!r} is {region.width}x{region.height}, the profile expects "
                            f"{spec.size[0]}x{spec.size[1]}: set the game's resolution to that (windowed or "
                            "borderless), or pass --region LEFT,TOP,WIDTH,HEIGHT")
        shown = sized
    return shown[0]


def _size(region: Region) -> tuple[int, int]:
    return (region.width, region.height)


class GameWindow:
    """One window followed while driving: where its client area is now, and whether it has focus."""

    def __init__(self, api: WindowsApi, hwnd: int):
        self.api, self.hwnd = api, hwnd

    def focused(self) -> bool:
        return self.api.foreground_window() == self.hwnd

    def region(self) -> Region:
        if not self.api.exists(self.hwnd):
            raise UserError("the game window closed; start the game and run this again")
        return self.api.client_region(self.hwnd)
