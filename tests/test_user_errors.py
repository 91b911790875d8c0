"""Every mistake a user can make on the command line, and every fault of the disk or the recordings, ends in
exit code 2 and ONE `error:` line naming the flag or the file, with no traceback and nothing written.

The table runs each command in-process through its main(argv) on a small world made for the case: two
recordings, a feature cache of them (no backbone) and a checkpoint (made once per module). The world's
files and bytes are compared before and after every case.
"""
import errno
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from data.errors import run_cli
from tests.conftest import synthetic_cache, write_episode
from tests.test_agent import make_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A carracing checkpoint and the recording it was made from (ck/rec/ep.zarr)."""
    return make_checkpoint(tmp_path_factory.mktemp("ck"))[0]


def build_world(root: Path) -> Path:
    rec = root / "rec" / "regular"
    for name, seed in (("a.zarr", 1), ("b.zarr", 2)):
        write_episode(rec / name, n=40, fps=20.0, seed=seed)
    synthetic_cache(root, [rec / "a.zarr", rec / "b.zarr"], variants=("clean",), block_rows=8, every=1)
    return root


def snapshot(*roots: Path) -> dict[str, str]:
    """Every path under the roots: a file's sha256, a folder's '/'."""
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            out[str(path)] = "/" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# --- damage done to recording a.zarr ----------------------------------------------------------------
A = "rec/regular/a.zarr"


def delete_frame_chunk(w: Path, _):
    (w / A / "frames" / "c" / "1" / "0" / "0" / "0").unlink()


def truncate_frame_chunk(w: Path, _):
    chunk = w / A / "frames" / "c" / "0" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:100])


def rewrite(name: str, make):
    def damage(w: Path, _):
        group = zarr.open_group(w / A, mode="r+")
        values = make(group[name][:])
        del group[name]
        group.create_array(name, data=values)
    return damage


def set_rows(name: str, change):
    def damage(w: Path, _):
        array = zarr.open_group(w / A, mode="r+")[name]
        values = array[:]
        change(values)
        array[:] = values
    return damage


# --- faults injected -------------------------------------------------------------------------------
def disk_fault(target: str, code: int, creating_only: bool = False):
    """Make the callable at `target` raise OSError(code) naming the path it was given (creating_only: only
    when called with mode="w-", i.e. when creating a store; reads pass through)."""
    def inject(w: Path, monkeypatch):
        import pydoc
        original = pydoc.locate(target)

        def fail(*args, **kwargs):
            if creating_only and kwargs.get("mode") != "w-":
                return original(*args, **kwargs)
            raise OSError(code, "injected", str(args[0]) if args else None)
        monkeypatch.setattr(target, fail)
    return inject


def file_at(rel: str):
    def make(w: Path, _):
        (w / rel).parent.mkdir(parents=True, exist_ok=True)
        (w / rel).write_text("a file where a folder should be")
    return make


def fake_run(w: Path, _):
    (w / "run").mkdir()
    (w / "run" / "last.pt").write_bytes(b"an earlier run")


def imwrite_fails(w: Path, monkeypatch):
    import cv2
    monkeypatch.setattr(cv2, "imwrite", lambda *a, **k: False)


def h5_file(w: Path, _):
    import h5py
    with h5py.File(w / "old" / "new_data" / "x.h5", "w") as f:
        f["images"] = np.zeros((4, 180, 240, 3), np.uint8)
        f["labels"] = np.eye(7, dtype=np.uint8)[[0, 1, 2, 3]]


def with_h5(then=None):
    def make(w: Path, monkeypatch):
        (w / "old" / "new_data").mkdir(parents=True)
        h5_file(w, monkeypatch)
        if then:
            then(w, monkeypatch)
    return make


# (command, argv with {w} for the world and {ckpt}, {ckpt_rec} for the checkpoint and its recording,
#  text the error line must hold, optional set-up (damage or fault) before the snapshot)
F, T, D, R, I, IMP = "extract_features", "train_head", "drive", "tools.replay", "tools.inspect", "tools.import_legacy"
FEATURES = ("--recordings {w}/rec --cache {w}/new-cache --backbone vit_tiny_test --weights random --block-rows 16 "
            "--pca none")  # the gta5 profile's PCA 64 is wider than the tiny backbone
TRAIN = "--cache {w}/cache --out {w}/run --steps 4 --eval-every 2 --batch-size 8"
CASES = {
    # option values
    "features --fps 0": (F, FEATURES + " --fps 0", "--fps 0.0: must be", None),
    "features --fps nan": (F, FEATURES + " --fps nan", "--fps nan: must be", None),
    "features --block-rows 0": (F, FEATURES.replace("16", "0"), "--block-rows 0: must be between 1 and", None),
    "features --batch-size 0": (F, FEATURES + " --batch-size 0", "--batch-size 0: must be at least 1", None),
    "features --pca 0": (F, FEATURES + " --pca 0", "--pca 0", None),
    "features --shard 3/2": (F, FEATURES + " --shard 3/2", "--shard '3/2'", None),
    "train --batch-size 0": (T, TRAIN + " --batch-size 0", "--batch-size 0: must be at least 1", None),
    "train --eval-every 0": (T, TRAIN + " --eval-every 0", "--eval-every 0: must be at least 1", None),
    "train --val-fraction 1.5": (T, TRAIN + " --val-fraction 1.5", "--val-fraction 1.5: must be a share in [0, 1)", None),
    "train --label-shift -1": (T, TRAIN + " --label-shift -1", "--label-shift -1.0: must be between 0 and", None),
    "train --label-shift 100": (T, TRAIN + " --label-shift 100", "--label-shift 100.0: must be between 0 and", None),
    "train --label-shift 5 (too long for the episodes)": (T, TRAIN + " --label-shift 5", "--label-shift 5.0 s need", None),
    "train --stride -0.2": (T, TRAIN + " --stride -0.2", "--stride -0.2: must be a positive number of seconds", None),
    "train --steps 0": (T, TRAIN + " --steps 0", "--steps 0: must be at least 1", None),
    "train --seq-len 0": (T, TRAIN + " --seq-len 0", "--seq-len 0: must be at least 1", None),
    "train --lr 0": (T, TRAIN + " --lr 0", "--lr 0.0: must be", None),
    "train --patience -1": (T, TRAIN + " --patience -1", "--patience -1: must be >= 0", None),
    "train --max-steer 2": (T, TRAIN + " --max-steer 2", "--max-steer 2.0: must be", None),
    "train --seed -1": (T, TRAIN + " --seed -1", "--seed -1: must be >= 0", None),
    "train --device foo": (T, TRAIN + " --device foo", "--device foo: choose auto, cpu", None),
    "features --block-rows 1e5": (F, FEATURES.replace("16", "100000"), "--block-rows 100000: must be between 1 and", None),
    "train --batch-size above the sequences": (T, TRAIN.replace("8", "64"), "--batch-size 64: more than the", None),
    "ablate --steps 0": ("train_head.ablate", "--cache {w}/cache --out {w}/abl --steps 0", "--steps 0: must be", None),
    "ablate --batch-size 0": ("train_head.ablate", "--cache {w}/cache --out {w}/abl --batch-size 0",
                              "--batch-size 0: must be", None),
    "drive --latency 1e9": (D, "--ckpt {ckpt} --latency 1e9", "--latency 1000000000.0: must be > 0 and at most", None),
    "drive --latency 0": (D, "--ckpt {ckpt} --latency 0", "--latency 0.0: must be > 0", None),
    "drive --watchdog 0": (D, "--ckpt {ckpt} --watchdog 0", "--watchdog 0.0: must be > 0", None),
    "drive --max-steps 0": (D, "--ckpt {ckpt} --max-steps 0", "--max-steps 0: must be at least 1", None),
    "drive --seed -1": (D, "--ckpt {ckpt} --seed -1", "--seed -1: must be a track number", None),
    "drive --max-steer 1.5": (D, "--ckpt {ckpt} --max-steer 1.5", "--max-steer", None),
    "replay --batch-size 0": (R, "{ckpt_rec} --ckpt {ckpt} --video {w}/r.mp4 --batch-size 0", "--batch-size 0", None),
    "import --fps 0": (IMP, "{w}/old/new_data --out {w}/imported --fps 0", "--fps 0.0: must be", with_h5()),
    "import --stuck-pad-frames -1": (IMP, "{w}/old/new_data --out {w}/imported --stuck-pad-frames -1",
                                     "--stuck-pad-frames -1: must be >= 0", with_h5()),
    "record --pad-seconds -1": ("tools.record", "--out {w}/new-rec --pad-seconds -1", "--pad-seconds -1.0: must be", None),
    "record --minutes 0": ("tools.record", "--out {w}/new-rec --minutes 0", "--minutes 0.0: must be > 0", None),
    "record --fps 0": ("tools.record", "--out {w}/new-rec --fps 0", "--fps 0.0: must be", None),
    "record expert --minutes 0": ("tools.record", "--game carracing --expert --minutes 0 --out {w}/new-rec",
                                  "--minutes 0.0: must be > 0", None),
    "record expert --stuck-share 2": ("tools.record", "--game carracing --expert --minutes 1 --stuck-share 2 "
                                      "--out {w}/new-rec", "--stuck-share 2.0", None),
    "record expert --seed -3": ("tools.record", "--game carracing --expert --minutes 1 --seed -3 --out {w}/new-rec",
                                "--seed -3: must be", None),
    "demo --minutes 0": ("tools.demo", "--out {w}/demo --minutes 0", "--minutes 0.0: must be > 0", None),
    "demo --steps 0": ("tools.demo", "--out {w}/demo --steps 0", "--steps 0: must be at least 1", None),
    "demo --backbone nope": ("tools.demo", "--out {w}/demo --backbone nope", "backbone 'nope' is unknown", None),
    "demo --tracks 0": ("tools.demo", "--out {w}/demo --tracks 0", "--tracks 0: must be at least 1", None),
    "ablate_drive --tracks 0": ("tools.ablate_drive", "--demo {w}/demo --out {w}/ad --tracks 0",
                                "--tracks 0: must be at least 1", None),
    "ablate_drive --steps 0": ("tools.ablate_drive", "--demo {w}/demo --out {w}/ad --steps 0", "--steps 0: must be", None),
    "bench --threads 0": ("tools.bench.suite", "--out {w}/bench --threads 0", "--threads 0", None),
    "bench --p3-gb 0": ("tools.bench.suite", "--out {w}/bench --p3-gb 0", "--p3-gb 0.0", None),
    "inspect --frames 0": (I, "{w}/rec --montage {w}/m.png --frames 0", "--frames 0: must be at least 1", None),
    # damaged recordings (refused with --strict; skipped with a warning otherwise: tests/test_faults.py) and caches
    "features: deleted frame chunk": (F, FEATURES + " --strict", "a.zarr: frames chunk c/1/0/0/0 is missing",
                                      delete_frame_chunk),
    "features: truncated frame chunk": (F, FEATURES + " --strict", "a.zarr: frames chunk c/0/0/0/0 is truncated",
                                        truncate_frame_chunk),
    "features: truncated keys chunk": (F, FEATURES + " --strict", "a.zarr/keys: damaged data, cannot decode rows 0..39",
                                       lambda w, _: (w / A / "keys" / "c" / "0" / "0").write_bytes(b"\x28\xb5\x2f")),
    "features: keys stored as float with NaN": (F, FEATURES + " --strict", "a.zarr: keys are float64, not uint8",
                                                rewrite("keys", lambda k: np.where(k == 1, np.nan, 0.0))),
    "features: keys other than 0/1": (F, FEATURES + " --strict", "a.zarr: keys hold values other than 0 and 1",
                                      set_rows("keys", lambda k: k.__setitem__((3, 0), 7))),
    "features: frames of another dtype": (F, FEATURES + " --strict", "a.zarr: frames are uint16, not uint8",
                                          rewrite("frames", lambda f: f.astype(np.uint16))),
    "features: NaN timestamp": (F, FEATURES + " --strict", "a.zarr: timestamps are not all finite (row 5)",
                                set_rows("t", lambda t: t.__setitem__(5, np.nan))),
    "features: reversed timestamps": (F, FEATURES + " --strict", "a.zarr: timestamps go backwards",
                                      set_rows("t", lambda t: t.__setitem__(slice(None), t[::-1].copy()))),
    "features: frames of another profile": (F, FEATURES + " --game carracing", "pass the right --game", None),
    "inspect: the only episode damaged": (I, "{w}/" + A, "no episodes in", delete_frame_chunk),
    "replay: damaged episode": (R, "{w}/" + A + " --ckpt {ckpt} --video {w}/r.mp4", "a.zarr: frames chunk", delete_frame_chunk),
    "train: a cached recording damaged since": (T, TRAIN, "a.zarr: timestamps are not all finite",
                                                set_rows("t", lambda t: t.__setitem__(5, np.inf))),
    "features: fps attribute missing": (F, FEATURES + " --strict", "a.zarr: its fps attribute is None",
                                        lambda w, _: zarr.open_group(w / A, mode="r+").attrs.__delitem__("fps")),
    "train: a cache chunk deleted": (T, TRAIN, "episode a.zarr is damaged (clean/cls chunk c/1/0 is missing)",
                                     lambda w, _: (w / "cache/episodes/a.zarr/clean/cls/c/1/0").unlink()),
    "train: a cache chunk truncated": (T, TRAIN, "episode b.zarr is damaged (clean/patch chunk c/0/0/0 holds 10 bytes",
                                       lambda w, _: (w / "cache/episodes/b.zarr/clean/patch/c/0/0/0").write_bytes(b"x" * 10)),
    # outputs: paths that cannot be written, disk faults at the first write
    "inspect --montage under a file": (I, "{w}/rec --montage {w}/f/m.png", "--montage {w}/f/m.png: {w}/f is a file",
                                       file_at("f")),
    "inspect --montage not written": (I, "{w}/rec --montage {w}/m.png", "--montage {w}/m.png: could not be written",
                                      imwrite_fails),
    "inspect --montage .txt": (I, "{w}/rec --montage {w}/m.txt", "--montage {w}/m.txt: must end in .png", None),
    "features --cache under a file": (F, FEATURES.replace("{w}/new-cache", "{w}/f/cache"), "{w}/f",
                                      file_at("f")),
    "features: disk full creating the cache": (F, FEATURES, "new-cache: the disk is full",
                                               disk_fault("zarr.open_group", errno.ENOSPC, creating_only=True)),
    "features: read-only disk": (F, FEATURES, "new-cache: read-only file system",
                                 disk_fault("zarr.open_group", errno.EROFS, creating_only=True)),
    "train --out is a file": (T, TRAIN.replace("{w}/run", "{w}/f"), "--out {w}/f: is a file", file_at("f")),
    "train --out under a file": (T, TRAIN.replace("{w}/run", "{w}/f/run"), "{w}/f/run: a file stands where",
                                 file_at("f")),
    "import: permission denied": (IMP, "{w}/old/new_data --out {w}/imported", "permission denied",
                                  with_h5(disk_fault("data.legacy.EpisodeWriter", errno.EACCES))),
    "import --out is a file": (IMP, "{w}/old/new_data --out {w}/f", "{w}/f: exists and is not a directory",
                               with_h5(file_at("f"))),
    "drive --table under a file": (D, "--ckpt {ckpt} --eval --table {w}/f/eval.md", "--table {w}/f/eval.md: {w}/f is a file",
                                   file_at("f")),
    "drive --video not .mp4": (D, "--ckpt {ckpt} --video {w}/v.avi", "--video {w}/v.avi: must end in .mp4", None),
    "drive --telemetry exists": (D, "--ckpt {ckpt} --telemetry {w}/f", "{w}/f: already exists", file_at("f")),
    "replay --video under a file": (R, "{ckpt_rec} --ckpt {ckpt} --video {w}/f/r.mp4", "--video {w}/f/r.mp4: {w}/f is a file",
                                  file_at("f")),
    "replay --timeline .jpg": (R, "{ckpt_rec} --ckpt {ckpt} --video {w}/r.mp4 --timeline {w}/t.jpg", "must end in .png", None),
    "record expert --out is a file": ("tools.record", "--game carracing --expert --minutes 1 --out {w}/f",
                                      "--out {w}/f: is a file", file_at("f")),
    "record --out is a file": ("tools.record", "--out {w}/f", "--out {w}/f: is a file", file_at("f")),
    "demo --out is a file": ("tools.demo", "--out {w}/f", "--out {w}/f: is a file", file_at("f")),
    "bench --out is a file": ("tools.bench.suite", "--out {w}/f --skip backbone,stage1,p1,p3,p4,cache_bytes",
                              "--out {w}/f: is a file", file_at("f")),
    "features --cache is a file": (F, FEATURES.replace("new-cache", "f"), "--cache {w}/f: is a file", file_at("f")),
    "ablate --out is a file": ("train_head.ablate", "--cache {w}/cache --out {w}/f --steps 2", "--out {w}/f: is a file",
                               file_at("f")),
    # runs and state
    "train into an earlier run": (T, TRAIN, "already holds a run (last.pt); pass --resume", fake_run),
    "train --resume with nothing to resume": (T, TRAIN + " --resume", "--resume: {w}/run/last.pt does not exist", None),
    "train --resume --overwrite": (T, TRAIN + " --resume --overwrite", "--resume and --overwrite contradict", fake_run),
    # inputs that are not there
    "features: no recordings folder": (F, FEATURES.replace("{w}/rec", "{w}/nope"), "{w}/nope: no such recordings", None),
    "features --recordings is a file": (F, FEATURES.replace("{w}/rec", "{w}/f"), "{w}/f: is a file, not", file_at("f")),
    "train: no cache": (T, TRAIN.replace("{w}/cache", "{w}/nope"), "{w}/nope: not a feature cache", None),
    "inspect: no folder": (I, "{w}/nope", "{w}/nope: no such recordings directory", None),
    "import: no source": (IMP, "{w}/nope.h5 --out {w}/imported", "{w}/nope.h5: no such file", None),
    "replay: no episode": (R, "{w}/nope.zarr --ckpt {ckpt} --video {w}/r.mp4", "{w}/nope.zarr: not an episode store", None),
    "drive: no checkpoint": (D, "--ckpt {w}/nope.pt --latency 0.1", "{w}/nope.pt", None),
}


def run_main(module: str, argv: list[str]) -> int:
    import importlib

    main = importlib.import_module(module if module.startswith(("tools", "train_head.")) else module + ".__main__").main
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: main(argv))
    return exit_.value.code


@pytest.mark.parametrize("case", list(CASES))
def test_one_line_error_and_nothing_written(case, tmp_path, ckpt, monkeypatch, capsys):
    module, argv, expected, setup = CASES[case]
    w = build_world(tmp_path / "w")
    names = {"w": str(w), "ckpt": str(ckpt), "ckpt_rec": str(ckpt.parents[1] / "rec" / "ep.zarr")}
    if setup:
        setup(w, monkeypatch)
    before = snapshot(w, ckpt.parents[1])
    capsys.readouterr()
    code = run_main(module, [part.format(**names) for part in argv.split()])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert expected.format(**names) in lines[0], err
    assert snapshot(w, ckpt.parents[1]) == before


def test_the_table_covers_every_command_and_class():
    modules = {module for module, *_ in CASES.values()}
    assert modules == {"extract_features", "train_head", "train_head.ablate", "drive", "tools.replay", "tools.inspect",
                       "tools.import_legacy", "tools.record", "tools.demo", "tools.bench.suite", "tools.ablate_drive"}
    assert len(CASES) >= 40
