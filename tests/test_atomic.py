"""data/atomic.py: a file is replaced whole or not at all, and no temporary file is left behind."""
import json

import numpy as np
import pytest
import torch

from data.atomic import atomic_path, save_figure, save_torch, write_image, write_json, write_jsonl, write_text
from data.errors import UserError


def test_writers_replace_the_file_and_leave_nothing_else(tmp_path):
    target = tmp_path / "sub" / "table.md"
    write_text(target, "old\n")
    write_text(target, "new\n")
    assert target.read_text() == "new\n"
    write_json(tmp_path / "r.json", {"a": [1, 2]}, indent=1)
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": [1, 2]}
    assert (tmp_path / "r.json").read_text().endswith("}\n")
    write_jsonl(tmp_path / "m.jsonl", [{"step": 1}, {"step": 2}])
    assert (tmp_path / "m.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'
    save_torch(tmp_path / "c.pt", {"w": torch.arange(3)})
    assert torch.equal(torch.load(tmp_path / "c.pt", weights_only=True)["w"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["c.pt", "m.jsonl", "r.json", "sub", "table.md"]


def test_an_error_while_writing_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "results.json"
    write_text(target, "kept")
    with pytest.raises(TypeError):  # json cannot store an object: raised after the temporary file exists
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            json.dumps(object())
    assert target.read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_temporary_keeps_the_suffix_for_writers_that_pick_the_format_by_name(tmp_path):
    with atomic_path(tmp_path / "curves.png") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp.name.startswith(".curves.")
        tmp.write_bytes(b"x")
    assert (tmp_path / "curves.png").read_bytes() == b"x"


def test_images_and_figures_are_written_in_their_format(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 255  # red, stored as BGR by cv2
    import cv2
    write_image(tmp_path / "m.png", rgb)
    assert cv2.imread(str(tmp_path / "m.png"))[0, 0].tolist() == [0, 0, 255]
    from matplotlib.figure import Figure
    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1])
    save_figure(tmp_path / "f.png", fig, dpi=20)
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_failed_image_write_is_a_user_error_naming_the_flag(tmp_path, monkeypatch):
    import cv2
    write_image(tmp_path / "m.png", np.zeros((2, 2, 3), np.uint8))
    before = (tmp_path / "m.png").read_bytes()
    monkeypatch.setattr(cv2, "imwrite", lambda path, image: False)  # how cv2 reports a full disk
    with pytest.raises(UserError, match=r"^--montage m.png: could not be written"):
        write_image(tmp_path / "m.png", np.ones((2, 2, 3), np.uint8), name="--montage m.png")
    assert (tmp_path / "m.png").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]
