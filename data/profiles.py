"""Game profiles: capture geometry, stored frame size and HUD rectangles, read from TOML files.

Everything downstream (recorder, augmentation, preprocessing, live loop) takes geometry from here.
"""
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from data.augment import AugmentSpec
from data.errors import UserError

PROFILE_DIR = Path(__file__).parent / "profiles"


@dataclass(frozen=True)
class Rect:
    """Pixel rectangle in stored-frame coordinates, half-open: x0 <= x < x1, y0 <= y < y1."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """(rows, cols) to index an (H, W, C) frame."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def flipped(self, width: int) -> "Rect":
        """This rectangle mirrored left-right inside a frame of the given width."""
        return Rect(width - self.x1, self.y0, width - self.x0, self.y1)


@dataclass(frozen=True)
class GameProfile:
    name: str
    window_title: str  # window searched for on Windows when no --region is given
    capture_size: tuple[int, int]  # (width, height) of the captured client area
    frame_size: tuple[int, int]  # (width, height) frames are stored at
    fps: float  # target recording rate
    hud: dict[str, Rect]  # minimap / HUD rectangles that augmentation must preserve
    preprocess: str  # "pad": zero-pad and centre to a multiple of 14; "resize": resize to one
    source: str  # the TOML file this came from
    augment: AugmentSpec = field(default_factory=AugmentSpec)  # variants for stage 1; always has "clean"
    window_classes: tuple[str, ...] = ()  # Windows window classes of the game's window; empty: any
    game: dict = field(default_factory=dict, hash=False)  # the [game] table, read by the game itself (e.g. its view)
    cache: dict = field(default_factory=dict)  # stage 1 defaults: keyword arguments of cache.reduce.Reduction

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        w, h = self.frame_size
        return (h, w, 3)


def to_frame_size(image: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """An RGB image (H, W, 3) at a profile's stored frame size (width, height): the one place frames are
    resized (recorder, GTA V capture, the embedded game), so the agent sees what the recorder stored."""
    if image.shape[1::-1] == tuple(frame_size):
        return image
    return cv2.resize(image, tuple(frame_size), interpolation=cv2.INTER_AREA)


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


CACHE_KEYS = ("dtype", "pca_dim", "fps")


def _cache_defaults(table: dict) -> dict:
    unknown = sorted(set(table) - set(CACHE_KEYS))
    if unknown:
        raise ValueError(f"[cache] has {', '.join(unknown)}; known: {', '.join(CACHE_KEYS)}")
    return dict(table)


def load_profile(name_or_path: str | Path) -> GameProfile:
    """A profile by name (`gta5`, `carracing`) or by path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PROFILE_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise UserError(
                f"no game profile '{name_or_path}' in {PROFILE_DIR}; "
                f"known: {', '.join(available_profiles())}, or pass a path to a .toml file"
            )
    try:
        spec = tomllib.loads(path.read_text())
        w, h = spec["frame"]["width"], spec["frame"]["height"]
        hud = {}
        for key, (x0, y0, x1, y1) in spec.get("hud", {}).items():
            rect = Rect(int(x0), int(y0), int(x1), int(y1))
            if not (0 <= rect.x0 < rect.x1 <= w and 0 <= rect.y0 < rect.y1 <= h):
                raise ValueError(f"hud.{key} {list(spec['hud'][key])} lies outside the {w}x{h} frame")
            hud[key] = rect
        preprocess = spec.get("preprocess", {}).get("mode", "pad")
        if preprocess not in ("pad", "resize"):
            raise ValueError(f"preprocess.mode must be 'pad' or 'resize', not {preprocess!r}")
        return GameProfile(
            name=spec["name"],
            window_title=spec.get("window_title", ""),
            capture_size=(int(spec["capture"]["width"]), int(spec["capture"]["height"])),
            frame_size=(int(w), int(h)),
            fps=float(spec["fps"]),
            hud=hud,
            preprocess=preprocess,
            source=str(path),
            augment=AugmentSpec.from_table(spec.get("augment", {})),
            window_classes=tuple(str(c) for c in spec.get("window_classes", ())),
            game=dict(spec.get("game", {})),
            cache=_cache_defaults(spec.get("cache", {})),
        )
    except FileNotFoundError:
        raise UserError(f"{path}: game profile not found") from None
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: invalid game profile ({e}); compare with {PROFILE_DIR / 'gta5.toml'}") from None
