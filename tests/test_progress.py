"""Long steps show a progress bar with ETA on a terminal, stay silent in logs and pipes, and keep their lines."""
import io
import sys

from data.progress import progress, say_above


class Terminal(io.StringIO):
    def isatty(self):
        return True


def terminal(monkeypatch) -> Terminal:
    """stderr as a terminal; called inside the test, since capsys swaps sys.stderr again when the test starts."""
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def test_bar_counts_with_eta_on_a_terminal(capsys, monkeypatch):
    stderr = terminal(monkeypatch)
    with progress(total=4, desc="replay", unit="frame") as bar:
        say = say_above(bar)
        for _ in range(4):
            bar.update()
        say("a line")
    text = stderr.getvalue()
    assert "replay" in text and "4/4" in text and "frame/s" in text and "<" in text  # elapsed<remaining
    assert capsys.readouterr().out == "a line\n"


def test_bar_is_silent_off_a_terminal_or_when_disabled(capsys, monkeypatch):
    stderr = terminal(monkeypatch)
    assert list(progress(range(3), desc="x", unit="frame", enabled=False)) == [0, 1, 2]
    assert stderr.getvalue() == ""
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    bar = progress(range(3), desc="x", unit="frame")
    assert list(bar) == [0, 1, 2] and log.getvalue() == ""
    say_above(bar)("still printed")
    assert capsys.readouterr().out == "still printed\n"


def test_training_shows_steps_with_eta_and_keeps_its_eval_lines(capsys, monkeypatch, tmp_path):
    from tests.test_train import settings
    from tests.conftest import synthetic_cache, write_episode
    from train_head.train import train

    paths = []
    for i in range(3):
        write_episode(tmp_path / f"e{i}.zarr", n=40, fps=10.0, shape=(8, 8, 3), seed=i)
        paths.append(tmp_path / f"e{i}.zarr")
    cache = synthetic_cache(tmp_path, paths, variants=("clean",), every=1, random_tokens=True)
    s = settings(cache, tmp_path / "run", steps=20)
    s.quiet = False
    stderr = terminal(monkeypatch)
    train(s)
    bar = stderr.getvalue()
    assert "training" in bar and "20/20" in bar and "step/s" in bar
    out = capsys.readouterr().out
    assert "step     20  val bce" in out and "best val:" in out
