"""The size of a feature cache before it is made, from the recordings and the settings alone (no backbone run),
and the check that it fits on the disk.

    python -m extract_features --recordings runs/recordings --cache runs/cache --estimate
"""
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from cache.reduce import Reduction
from data.episode import Episode
from data.errors import UserError
from data.index import EpisodeInfo
from data.profiles import GameProfile
from extract_features.models import backbone_config
from extract_features.selection import ExtractSettings, cache_rows, episode_profile, select_episodes, variant_names
from extract_features.preprocess import PreprocessSettings, patch_grid

GB = 1e9
SHRINK_PCA = 64  # the channels --pca is suggested with when a cache does not fit


def bytes_per_frame(channels: int, registers: int, patches: int, reduction: Reduction, blocks: int = 1) -> int:
    """Stored bytes of one cached frame of one variant (see cache/store.py): patch tokens in fp16, or in int8
    with an fp16 scale per token, PCA-projected when asked, for each stored block (the last and --layers);
    the CLS and register tokens in fp16, unprojected."""
    kept = reduction.pca_dim or channels
    if reduction.dtype == "int8":
        patch = patches * (kept + 2)  # a byte per channel and an fp16 scale per token
    else:
        patch = patches * kept * 2
    return patch * blocks + (1 + registers) * channels * 2


def reduction_text(r: Reduction) -> str:
    return f"{r.dtype}" + (f", PCA {r.pca_dim}" if r.pca_dim else ", all channels") + \
        (f", {r.fps:g} fps" if r.fps else ", every recorded frame")


def size_text(n: int) -> str:
    return f"{n / GB:.2f} GB" if n >= GB else f"{n / 1e6:.1f} MB"


def disk_free(path: Path) -> int:
    """Free bytes on the disk that holds path (or would hold it: its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def folder_bytes(path: Path) -> int:
    """Bytes of every file under path (0 when absent)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) if Path(path).exists() else 0


@dataclass(frozen=True)
class Estimate:
    settings: ExtractSettings
    episodes: int
    recorded_frames: int
    frames: int  # cached frames of one variant
    variants: tuple[str, ...]
    bytes_per_frame: int
    total_bytes: int  # token arrays, each episode rounded up to whole blocks (edge chunks are stored whole)
    existing_bytes: int  # already in the cache folder
    free_bytes: int

    @property
    def needed_bytes(self) -> int:
        return max(0, self.total_bytes - self.existing_bytes)

    @property
    def fits(self) -> bool:
        return self.needed_bytes <= self.free_bytes

    def describe(self) -> str:
        s, reduction = self.settings, reduction_text(self.settings.reduction)
        return "\n".join([
            f"recordings: {self.episodes} episodes, {self.recorded_frames:,} frames -> {self.frames:,} cached frames",
            f"variants: {', '.join(self.variants)} ({len(self.variants)})",
            f"bytes/frame: {self.bytes_per_frame:,} ({s.backbone}; {reduction})",
            f"total: {size_text(self.total_bytes)} for {self.frames * len(self.variants):,} frames x variants"
            + (f" ({size_text(self.existing_bytes)} already in {s.cache})" if self.existing_bytes else ""),
            f"free disk: {size_text(self.free_bytes)} at {s.cache} -> "
            + ("fits" if self.fits else f"does NOT fit; {fit_advice(self)}")])


def estimate(settings: ExtractSettings, episodes: list[EpisodeInfo] | None = None,
             free_disk=disk_free) -> Estimate:
    """What extracting with these settings stores; episodes: already indexed (all of them, every shard)."""
    if episodes is None:
        episodes, profile = select_episodes(settings, log=lambda *a: None)
    else:
        profile, episodes = episode_profile(settings, episodes, log=lambda *a: None)
    variants = tuple(variant_names(profile, settings.variants))
    config = backbone_config(settings.backbone)
    h, w, _ = profile.frame_shape
    rows, cols = patch_grid(h, w, PreprocessSettings(mode=profile.preprocess, multiple=config.patch_size))
    per_frame = bytes_per_frame(config.embed_dim, config.num_registers, rows * cols, settings.reduction,
                                blocks=1 + len(settings.layers))
    frames = stored = 0
    for info in episodes:
        n = len(cache_rows(Episode(info.path), settings.reduction.fps))
        frames += n
        stored += -(-n // settings.block_rows) * settings.block_rows
    return Estimate(settings=settings, episodes=len(episodes), recorded_frames=sum(e.n_frames for e in episodes),
                    frames=frames, variants=variants, bytes_per_frame=per_frame,
                    total_bytes=stored * per_frame * len(variants), existing_bytes=folder_bytes(settings.cache),
                    free_bytes=free_disk(settings.cache))


def fit_advice(est: Estimate) -> str:
    """The flags that would make the cache fit, tried from the smallest loss on: int8, PCA, half and a quarter
    of the frame rate, two variants; or what to do when none is enough."""
    s, r = est.settings, est.settings.reduction
    steps = []  # (flag, value, settings changed so far)
    if r.dtype != "int8":
        steps.append(("--dtype", "int8", dict(reduction=replace(r, dtype="int8"))))
    small = replace(r, dtype="int8", pca_dim=min(r.pca_dim or SHRINK_PCA, SHRINK_PCA))
    if small.pca_dim != r.pca_dim:
        steps.append(("--pca", str(SHRINK_PCA), dict(reduction=small)))
    fps = r.fps or max(e.fps for e in select_episodes(s, log=lambda *a: None)[0])
    for factor in (2, 4):
        steps.append(("--fps", f"{fps / factor:g}", dict(reduction=replace(small, fps=fps / factor))))
    if len(est.variants) > 2:
        steps.append(("--variants", ",".join(est.variants[:2]), dict(variants=est.variants[:2])))
    flags, changed = {}, {}
    for flag, value, change in steps:
        flags[flag] = value
        changed.update(change)
        shrunk = estimate(replace(s, **changed), free_disk=lambda _: est.free_bytes)
        if shrunk.fits:
            return f"{' '.join(f'{k} {v}' for k, v in flags.items())} would make it {size_text(shrunk.total_bytes)}"
    return "free some disk space or pass a --cache folder on a bigger disk"


def require_space(settings: ExtractSettings, episodes: list[EpisodeInfo], free_disk=disk_free) -> Estimate:
    """Refuse, before anything is written, an extraction whose cache will not fit on the disk."""
    est = estimate(settings, episodes, free_disk)
    if not est.fits:
        raise UserError(f"{settings.cache}: the cache needs {size_text(est.needed_bytes)} more, "
                        f"{size_text(est.free_bytes)} are free; {fit_advice(est)} (--estimate shows the sizes)")
    return est


OFF = "none"  # --pca none: every channel; --fps none: every recorded frame


def profile_reduction(profile: GameProfile, dtype: str | None = None, pca_dim: int | str | None = None,
                      fps: float | str | None = None) -> Reduction:
    """The profile's cache defaults ([cache] in its TOML) with the flags given over them; OFF turns a
    default off. Numbers pass as given, so a bad one (--fps 0) is refused by Reduction's checks."""
    values = dict(profile.cache)
    for name, value in (("dtype", dtype), ("pca_dim", pca_dim), ("fps", fps)):
        if value is not None:
            values[name] = None if value == OFF else value
    return Reduction(**values)

