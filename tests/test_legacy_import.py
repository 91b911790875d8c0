import subprocess
import sys

import h5py
import numpy as np
import pytest

from data.episode import Episode
from data.labels import LEGACY7

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]

# The seven legacy classes and the multi-hot w, a, s, d each must become.
EXPECTED = {"w": [1, 0, 0, 0], "a": [0, 1, 0, 0], "s": [0, 0, 1, 0], "d": [0, 0, 0, 1],
            "wa": [1, 1, 0, 0], "wd": [1, 0, 0, 1], "nothing": [0, 0, 0, 0]}


def write_h5(path, n=14, labels=None, images=None, shape=(180, 240, 3)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    if images is None:
        images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    if labels is None:
        labels = np.eye(7, dtype=np.uint8)[np.arange(n) % 7]  # every class, in order
    with h5py.File(path, "w") as f:
        if images is not False:
            f.create_dataset("images", data=images)
        if labels is not False:
            f.create_dataset("labels", data=labels)
    return images, labels


def run_import(*args):
    return subprocess.run([sys.executable, "-m", "tools.import_legacy", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True)


def test_converts_all_seven_classes_kinds_and_stuck_padding(tmp_path):
    src = tmp_path / "old"
    images, _ = write_h5(src / "new_data" / "training_data_1.h5")
    write_h5(src / "stuck" / "stuck_1.h5", n=7)
    write_h5(src / "turns" / "t.h5", labels=np.eye(5, dtype=np.uint8)[np.arange(14) % 5])  # (N,5) layout
    out = tmp_path / "rec"
    r = run_import(src / "new_data", src / "stuck", src / "turns", "--out", out)
    assert r.returncode == 0, r.stderr

    ep = Episode(out / "new_data" / "training_data_1.zarr")
    frames, keys, t = ep.read()
    np.testing.assert_array_equal(frames, images)
    for row, cls in enumerate(LEGACY7 * 2):
        assert keys[row].tolist() == EXPECTED[cls], cls
    assert ep.kind == "new_data" and ep.pad_frames == 0 and ep.complete
    assert ep.fps == 80.0 and ep.attrs["synthetic_time"] and t[3] == pytest.approx(3 / 80)
    assert "training_data_1.h5" in ep.attrs["source"]

    stuck = Episode(out / "stuck" / "stuck_1.zarr")
    assert stuck.kind == "stuck" and stuck.pad_frames == 300

    five = Episode(out / "turns" / "t.zarr")
    assert five.keys[4].tolist() == [0, 0, 0, 0] and five.keys[3].tolist() == [0, 0, 0, 1]

    again = run_import(src / "stuck", "--out", out, "--stuck-pad-frames", "20")  # already there: skipped
    assert again.returncode == 0 and "already imported" in again.stdout + again.stderr


def test_overrides_fps_pad_and_kind(tmp_path):
    write_h5(tmp_path / "stuck" / "s.h5", n=7)
    r = run_import(tmp_path / "stuck" / "s.h5", "--out", tmp_path / "rec", "--fps", "40",
                   "--stuck-pad-frames", "12")
    assert r.returncode == 0, r.stderr
    ep = Episode(tmp_path / "rec" / "stuck" / "s.zarr")
    assert ep.fps == 40.0 and ep.pad_frames == 12 and ep.t[2] == pytest.approx(2 / 40)


@pytest.mark.parametrize("case, message", [
    ("no_images", "no dataset 'images'"),
    ("no_labels", "no dataset 'labels'"),
    ("length", "14 images but 13 labels"),
    ("not_one_hot", "not one-hot"),
    ("not_binary", "other than 0 and 1"),
    ("shape", "expected uint8 (N,180,240,3)"),
    ("dtype", "expected uint8"),
    ("empty_file", "empty file"),
    ("no_frames", "holds no frames"),
    ("not_hdf5", "not a readable HDF5 file"),
])
def test_bad_input_one_line_error_and_nothing_written(tmp_path, case, message):
    good = tmp_path / "src" / "regular" / "a_good.h5"
    write_h5(good)
    bad = tmp_path / "src" / "regular" / "b_bad.h5"
    labels7 = np.eye(7, dtype=np.uint8)[np.arange(14) % 7]
    if case == "no_images":
        write_h5(bad, images=False)
    elif case == "no_labels":
        write_h5(bad, labels=False)
    elif case == "length":
        write_h5(bad, labels=labels7[:13])
    elif case == "not_one_hot":
        two = labels7.copy()
        two[5, 0] = 1
        write_h5(bad, labels=two)
    elif case == "not_binary":
        write_h5(bad, labels=labels7 * 2)
    elif case == "shape":
        write_h5(bad, shape=(90, 120, 3))
    elif case == "dtype":
        write_h5(bad, images=np.zeros((14, 180, 240, 3), np.float32))
    elif case == "empty_file":
        bad.write_bytes(b"")
    elif case == "no_frames":
        write_h5(bad, images=np.zeros((0, 180, 240, 3), np.uint8), labels=np.zeros((0, 7), np.uint8))
    elif case == "not_hdf5":
        bad.write_text("hello")
    out = tmp_path / "rec"
    r = run_import(tmp_path / "src" / "regular", "--out", out)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "b_bad.h5" in lines[0] and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()  # all files are checked before the first is written


def test_refuses_output_dir_with_foreign_content(tmp_path):
    write_h5(tmp_path / "src" / "regular" / "a.h5")
    out = tmp_path / "rec"
    (out / "regular").mkdir(parents=True)
    (out / "regular" / "notes.txt").write_text("mine")
    r = run_import(tmp_path / "src" / "regular", "--out", out)
    assert r.returncode == 2 and "notes.txt" in r.stderr and "not an episode store" in r.stderr
    assert sorted(p.name for p in (out / "regular").iterdir()) == ["notes.txt"]
