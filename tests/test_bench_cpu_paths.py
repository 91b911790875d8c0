"""tools.bench.cpu_paths: every option runs on the same frames; fp32 eager is the reference, bf16 and int8
tokens are close to it but not equal, the smaller geometry has fewer patches."""
import pytest

from data.errors import UserError
from tools.bench.cpu_paths import compare, main


def test_options_are_compared_with_fp32_eager():
    rows = compare("vit_tiny_test", (42, 70), (1, 2), rounds=1, compile=False, log=lambda *a: None)
    by = {(r["option"], r["batch"]): r for r in rows}
    assert {b for _, b in by} == {1, 2}
    eager = by[("fp32 eager", 2)]
    assert eager["speedup"] == 1.0 and eager["patch_err"] == 0.0 and eager["cls_err"] == 0.0
    int8 = [r for r in rows if r["option"].startswith("int8 dynamic")]
    assert int8 and all(0 < r["patch_err"] < 0.2 and 0 < r["cls_err"] < 0.3 for r in int8)
    bf16 = [r for r in rows if r["option"] == "bf16 autocast"]
    assert len(bf16) == 2 and all(0 < r["patch_err"] < 0.1 for r in bf16)
    smaller = by[("fp32, frames 56x28", 1)]  # 3/4 of 70x42, rounded to whole patches: 4x2 instead of 5x3
    assert smaller["patch_err"] is None and smaller["ms_per_frame"] > 0


@pytest.mark.parametrize("argv", [["--size", "112"], ["--size", "axb"], ["--batches", "0"], ["--rounds", "0"]])
def test_bad_flags_are_one_line(argv):
    with pytest.raises(UserError):
        main(argv)
