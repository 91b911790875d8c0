import subprocess
import sys
from pathlib import Path

import cv2

from tests.conftest import write_episode

ROOT = Path(__file__).resolve().parents[1]


def test_table_and_montage(tmp_path):
    _, keys_a, _ = write_episode(tmp_path / "rec" / "regular" / "a.zarr", n=40, fps=20.0)
    write_episode(tmp_path / "rec" / "stuck" / "b.zarr", n=20, fps=10.0, kind="stuck", pad_frames=5, seed=1)
    out = tmp_path / "m.png"
    r = subprocess.run([sys.executable, "-m", "tools.inspect", str(tmp_path / "rec"), "--montage", str(out),
                        "--frames", "6"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    row_a = next(line for line in lines if line.startswith("regular/a.zarr"))
    w_share = f"{keys_a[:, 0].mean() * 100:.0f}%"
    assert row_a.split()[1:5] == ["regular", "40", "1.9", "20.0"] and w_share in row_a
    row_b = next(line for line in lines if line.startswith("stuck/b.zarr"))
    assert row_b.split()[1:6] == ["stuck", "20", "1.9", "10.0", "5"]
    assert lines[-2].split()[:3] == ["2", "episodes", "60"]
    img = cv2.imread(str(out))
    assert img.shape == (2 * 360, 4 * 480, 3)  # 6 tiles of 2x-scaled 240x180 in a 4-column grid


def test_no_episodes_is_a_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tools.inspect", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == f"error: no episodes in {tmp_path}"
