"""Look at recordings: a table of episodes, a montage of sample frames, augmentation variants.

    python -m tools.inspect runs/recordings
    python -m tools.inspect runs/recordings --montage montage.png
"""
import argparse
from pathlib import Path

import cv2
import numpy as np

from data.atomic import write_image
from data.episode import Episode
from data.errors import UserError, require, run_cli
from data.flags import Renamed
from data.index import EpisodeInfo, index_episodes
from data.labels import KEYS, keys_text
from data.paths import check_writable

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def episode_table(episodes: list[EpisodeInfo], roots: list[Path]) -> str:
    """One line per episode: kind, frames, duration, measured fps, share of frames with each key held."""
    head = f"{'episode':<44} {'kind':<10} {'frames':>7} {'secs':>7} {'fps':>6} {'pad':>4} " + \
           " ".join(f"{k:>5}" for k in KEYS) + "  complete"
    lines, all_keys, total_secs = [head, "-" * len(head)], [], 0.0
    for info in episodes:
        ep = Episode(info.path)
        keys, t = ep.keys[:], ep.t[:]
        secs = float(t[-1] - t[0]) if len(t) > 1 else 0.0
        fps = (len(t) - 1) / secs if secs > 0 else float("nan")
        share = keys.mean(axis=0) * 100 if len(keys) else np.zeros(4)
        all_keys.append(keys)
        total_secs += secs
        name = _relative(info.path, roots)
        lines.append(f"{name[-44:]:<44} {info.kind[:10]:<10} {len(ep):>7} {secs:>7.1f} {fps:>6.1f} {ep.pad_frames:>4} "
                     + " ".join(f"{v:>4.0f}%" for v in share) + f"  {'yes' if ep.complete else 'NO'}")
    keys = np.concatenate(all_keys) if all_keys else np.zeros((0, 4))
    share = keys.mean(axis=0) * 100 if len(keys) else np.zeros(4)
    lines.append("-" * len(head))
    lines.append(f"{f'{len(episodes)} episodes':<44} {'':<10} {len(keys):>7} {total_secs:>7.1f} {'':>6} {'':>4} "
                 + " ".join(f"{v:>4.0f}%" for v in share))
    return "\n".join(lines)


def write_montage(episodes: list[EpisodeInfo], out: Path, count: int = 16, columns: int = 4) -> None:
    """A grid of frames spread evenly over all episodes, each labelled with its keys and episode."""
    total = sum(e.n_frames for e in episodes)
    picks = np.linspace(0, total - 1, num=min(count, total)).astype(int)
    starts = np.cumsum([0] + [e.n_frames for e in episodes])
    tiles = []
    for pick in picks:
        i = int(np.searchsorted(starts, pick, side="right") - 1)
        ep, row = Episode(episodes[i].path), int(pick - starts[i])
        tile = cv2.resize(ep.frames[row], None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
        _label(tile, f"{keys_text(ep.keys[row])}  {ep.kind} #{row}")
        tiles.append(tile)
    h, w, _ = tiles[0].shape
    tiles = [cv2.resize(t, (w, h)) for t in tiles]  # episodes of different sizes share one grid
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % columns)
    rows = [np.hstack(tiles[r:r + columns]) for r in range(0, len(tiles), columns)]
    write_image(out, np.vstack(rows), name=f"--montage {out}")


def _label(img: np.ndarray, text: str) -> None:
    cv2.rectangle(img, (0, 0), (img.shape[1], 22), (0, 0, 0), -1)
    cv2.putText(img, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)


def _relative(path: Path, roots: list[Path]) -> str:
    for root in roots:
        if path.is_relative_to(root) and path != root:
            return str(path.relative_to(root))
    return path.name


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.inspect", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="recordings directories (searched recursively)")
    p.add_argument("--kind", action="append", help="only episodes of this kind (repeatable)")
    p.add_argument("--montage", type=Path, metavar="PNG", help="write a grid of sample frames labelled with keys")
    p.add_argument("--frames", type=int, default=16, help="frames in the montage (default: %(default)s)")
    p.add_argument("--augment", type=Path, metavar="PNG",
                   help="write one short sequence of the first episode under every augmentation variant")
    p.add_argument("--game", "--profile", dest="profile", action=Renamed,
                   help="game profile for --augment (default: the episode's); --profile is its deprecated old name")
    args = p.parse_args(argv)
    require(args.frames >= 1, "--frames", args.frames, "at least 1")
    for flag, path in (("--montage", args.montage), ("--augment", args.augment)):
        if path is not None:
            check_writable(path, flag, IMAGE_SUFFIXES)

    episodes = index_episodes(args.dirs, kinds=args.kind)
    if not episodes:
        kinds = f" of kind {', '.join(args.kind)}" if args.kind else ""
        raise UserError(f"no episodes{kinds} in {', '.join(map(str, args.dirs))}")
    print(episode_table(episodes, args.dirs))
    if args.montage:
        write_montage(episodes, args.montage, count=args.frames)
        print(f"montage: {args.montage}")
    if args.augment:
        from data.profiles import load_profile
        from tools.augment_view import write_augment_grid

        first = episodes[0]
        profile = load_profile(args.profile or first.profile or "gta5")
        write_augment_grid(first.path, profile, args.augment)
        print(f"augmentation variants: {args.augment}")


if __name__ == "__main__":
    run_cli(main)
