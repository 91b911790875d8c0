"""A picture of the embedded game's two views for README: the same moment top-down and from the hood,
then hood frames with traffic as the expert meets and passes it (frames at their stored 168x112, 2x).

    python -m tools.hood_montage [--out tools/hood_montage.png] [--seed 1000]
"""
import argparse
from pathlib import Path

import cv2
import numpy as np

from data.errors import UserError, run_cli
from drive.carracing.game import CarRacingGame, GameSettings
from drive.carracing.expert import Expert

CAPTION = 18  # pixel rows of the caption above each panel


def panel(image: np.ndarray, caption: str, size: tuple[int, int]) -> np.ndarray:
    interpolation = cv2.INTER_NEAREST if image.shape[1] <= size[0] else cv2.INTER_AREA
    out = np.full((size[1] + CAPTION, size[0], 3), 255, np.uint8)
    out[CAPTION:] = cv2.resize(image, size, interpolation=interpolation)
    cv2.putText(out, caption, (4, CAPTION - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (20, 20, 20), 1, cv2.LINE_AA)
    return out


def montage(seed: int = 1000, scale: int = 2) -> np.ndarray:
    """Row 1: top-down frame, hood frame and the hood video render of one moment; row 2: three hood frames
    with traffic 2-25 units ahead."""
    top, hood = CarRacingGame(GameSettings()), CarRacingGame(GameSettings(profile="carracing_hood"))
    try:
        size = tuple(scale * v for v in hood.profile.frame_size)
        expert = Expert()
        for game in (top, hood):
            game.reset(seed)
        expert.reset(hood)
        moment, candidates, t = None, [], 0.0
        while not hood.done:
            hold = expert.decide(hood)
            for game in (top, hood):
                game.advance(0.1, hold)  # no traffic in the top-down game: the same drive until the first car
            t += 0.1
            if moment is None and t >= 3.0:
                moment = [panel(top.frame(), f"top-down (carracing), t = {t:.1f} s", size),
                          panel(hood.frame(), "hood camera (carracing_hood), same moment", size),
                          panel(hood.screen(), "hood, as videos draw it (504x336)", size)]
            gaps = hood.traffic.gaps(expert.index)
            ahead = gaps[(gaps > 2.0) & (gaps < 25.0)]
            if len(ahead):
                cars = "a car" if len(ahead) == 1 else f"{len(ahead)} cars"
                candidates.append(panel(hood.frame(), f"traffic: {cars}, nearest {ahead.min():.0f} ahead, t = {t:.1f} s",
                                        size))
    finally:
        top.close()
        hood.close()
    if moment is None or len(candidates) < 3:
        raise UserError(f"--seed {seed}: the expert met too little traffic on this track for the montage; try another")
    picked = [candidates[i] for i in (0, len(candidates) // 2, len(candidates) - 1)]  # early, middle and late
    return np.vstack([np.hstack(moment), np.hstack(picked)])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.hood_montage", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--out", type=Path, default=Path("tools/hood_montage.png"), help="PNG to write (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1000, help="track seed (default: %(default)s)")
    args = p.parse_args(argv)
    if args.out.suffix.lower() != ".png":
        raise UserError(f"--out {args.out}: must end in .png")
    image = montage(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    args.out.write_bytes(data.tobytes())
    print(f"{args.out}: {image.shape[1]}x{image.shape[0]}, {args.out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    run_cli(main)
