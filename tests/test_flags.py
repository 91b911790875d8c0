"""One flag syntax across the command lines: seeds, and renamed flags that keep their old name for one release."""
import argparse

import pytest

from data.errors import UserError
from data.flags import Renamed, Seeds, parse_seeds


def test_parse_seeds_reads_lists_ranges_and_mixes():
    assert parse_seeds("0 1 2") == [0, 1, 2]
    assert parse_seeds("1000-1002") == [1000, 1001, 1002]
    assert parse_seeds("1,5-6 9") == [1, 5, 6, 9]
    for bad in ("a-b", "5-3", "", "1.5"):
        with pytest.raises(UserError, match="--seeds"):
            parse_seeds(bad)


def parser():
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", nargs="+", action=Seeds, default=[0])
    p.add_argument("--video", "--out", dest="out", action=Renamed)
    return p


def test_seeds_flag_takes_words_and_ranges():
    assert parser().parse_args([]).seeds == [0]
    assert parser().parse_args(["--seeds", "0", "1", "5-6"]).seeds == [0, 1, 5, 6]
    assert parser().parse_args(["--seeds", "1000-1002"]).seeds == [1000, 1001, 1002]


def test_old_flag_name_works_with_one_note(capsys):
    assert parser().parse_args(["--video", "a.mp4"]).out == "a.mp4"
    assert capsys.readouterr().err == ""
    assert parser().parse_args(["--out", "b.mp4"]).out == "b.mp4"
    assert capsys.readouterr().err == "note: --out is deprecated and goes in the next release; use --video\n"


def test_commands_take_the_new_names_and_the_old_ones(capsys):
    from drive.__main__ import parser as drive_parser
    from train_head.__main__ import add_head_arguments

    args = drive_parser().parse_args(["--ckpt", "c.pt", "--features", "recompute", "--seeds", "1000", "1002-1003"])
    assert args.mode == "recompute" and args.seeds == [1000, 1002, 1003]
    assert capsys.readouterr().err == ""
    assert drive_parser().parse_args(["--ckpt", "c.pt", "--mode", "recompute"]).mode == "recompute"
    assert "--mode is deprecated" in capsys.readouterr().err
    assert drive_parser().parse_args(["--ckpt", "c.pt"]).mode == "ring"

    head = argparse.ArgumentParser()
    add_head_arguments(head)
    assert head.parse_args(["--head", "gru"]).kind == "gru" and head.parse_args([]).kind == "lstm"
    assert head.parse_args(["--kind", "transformer"]).kind == "transformer"
    assert "--kind is deprecated" in capsys.readouterr().err


def test_record_profile_is_the_old_name_of_game(capsys):
    from tools.record import main as record

    with pytest.raises(UserError, match="pass both --game carracing and --expert"):
        record(["--profile", "carracing", "--minutes", "1"])
    assert "--profile is deprecated" in capsys.readouterr().err
