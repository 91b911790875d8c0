"""Import the seed's .h5 recordings as episodes: python -m tools.import_legacy SRC... --out DIR"""
import argparse
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from data.errors import run_cli
from data.legacy import ImportSettings, check_output_dir, find_sources, import_file, validate


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.import_legacy", description=__doc__.split(":")[0] + ".",
                                epilog="Each .h5 file becomes one episode in DIR/<kind>/<name>.zarr; the kind "
                                       "is the name of the file's folder (e.g. stuck, turns, new_data).")
    p.add_argument("sources", nargs="+", metavar="SRC", help=".h5 files or folders of them")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="recordings directory")
    p.add_argument("--fps", type=float, default=ImportSettings.fps, help="recording rate (default: %(default)s)")
    p.add_argument("--stuck-pad-frames", type=int, default=ImportSettings.stuck_pad_frames,
                   help="padding frames at the start of stuck recordings (default: %(default)s)")
    p.add_argument("--kind", help="kind for all files instead of the folder name")
    args = p.parse_args(argv)
    settings = replace(ImportSettings(), fps=args.fps, stuck_pad_frames=args.stuck_pad_frames, kind=args.kind)

    check_output_dir(args.out)
    files = [validate(path, settings) for path in find_sources(args.sources)]  # all checked before any write
    total = sum(len(f.keys) for f in files)
    with tqdm(total=total, unit="frame", desc="importing") as bar:
        for f in files:
            target = import_file(f, args.out, settings, progress=bar.update)
            if target is None:
                bar.update(len(f.keys))
                tqdm.write(f"skip {f.path}: already imported")
            else:
                tqdm.write(f"{f.path} -> {target} ({len(f.keys)} frames, kind {f.kind})")


if __name__ == "__main__":
    run_cli(main)
