"""The set-up entry (tools/setup_env.py) with the platform injected, so its Windows branches run on Linux; the
Makefile calls it; every CLI has a console command."""
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tools import commands, setup_env
from tools.setup_env import (DEFAULT_TORCH, Platform, SetupError, chosen_torch, install_commands, stamp_of, task_command,
                             venv_python)

ROOT = Path(__file__).resolve().parents[1]
WINDOWS = Platform(windows=True, version=(3, 11), bits=64, executable=r"C:\Python311\python.exe")
LINUX = Platform(windows=False, version=(3, 12), bits=64, executable="/usr/bin/python3")
CUDA = "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"


def test_venv_interpreter_paths():
    venv = Path(".venv")
    assert venv_python(venv, WINDOWS) == Path(".venv/Scripts/python.exe")
    assert venv_python(venv, LINUX) == Path(".venv/bin/python")


@pytest.mark.parametrize("platform, python", [(WINDOWS, str(Path(".venv/Scripts/python.exe"))),
                                              (LINUX, str(Path(".venv/bin/python")))])
def test_fresh_install_commands(platform, python):
    commands = install_commands(Path(".venv"), DEFAULT_TORCH, b"[project]", platform, stamp=None, has_python=False)
    assert commands == [
        [platform.executable, "-m", "venv", ".venv"],
        [python, "-m", "pip", "install", "-q", "torch==2.13.0"],
        [python, "-m", "pip", "install", "-q", "-e", ".[dev]"],
    ]


def test_reinstalls_only_when_pyproject_or_torch_change():
    venv, pyproject = Path(".venv"), b"[project]"
    python = str(venv_python(venv, WINDOWS))
    done = stamp_of(pyproject, DEFAULT_TORCH)
    assert install_commands(venv, DEFAULT_TORCH, pyproject, WINDOWS, done, has_python=True) == []
    # pyproject.toml changed: pip again, in the same environment
    assert install_commands(venv, DEFAULT_TORCH, b"[project] # new", WINDOWS, done, has_python=True) == [
        [python, "-m", "pip", "install", "-q", "torch==2.13.0"], [python, "-m", "pip", "install", "-q", "-e", ".[dev]"]]
    # the CUDA build: an emptied environment (pip would keep the CPU build of the same version)
    cuda = install_commands(venv, CUDA, pyproject, WINDOWS, done, has_python=True)
    assert cuda[0] == [WINDOWS.executable, "-m", "venv", ".venv", "--clear"]
    assert cuda[1] == [python, "-m", "pip", "install", "-q", "torch==2.13.0", "--index-url",
                       "https://download.pytorch.org/whl/cu126"]
    # a venv whose interpreter is gone, or an older Makefile's empty stamp: created / installed again
    assert install_commands(venv, DEFAULT_TORCH, pyproject, WINDOWS, done, has_python=False)[0][1:3] == ["-m", "venv"]
    assert len(install_commands(venv, DEFAULT_TORCH, pyproject, WINDOWS, None, has_python=True)) == 2


def test_the_dev_extra_only_where_tests_need_it():
    venv, pyproject = Path(".venv"), b"[project]"
    python = str(venv_python(venv, LINUX))
    fresh = install_commands(venv, DEFAULT_TORCH, pyproject, LINUX, None, has_python=False, dev=False)
    assert fresh[-1] == [python, "-m", "pip", "install", "-q", "-e", "."]  # `demo` first: no pytest, transformers
    without = stamp_of(pyproject, DEFAULT_TORCH, dev=False)
    assert install_commands(venv, DEFAULT_TORCH, pyproject, LINUX, without, has_python=True, dev=False) == []
    # `test` after it: the extra alone, torch stays
    assert install_commands(venv, DEFAULT_TORCH, pyproject, LINUX, without, has_python=True, dev=True) == [
        [python, "-m", "pip", "install", "-q", "-e", ".[dev]"]]
    # an environment with the extra, or from a stamp that did not record it, serves `demo` as it is
    for done in (stamp_of(pyproject, DEFAULT_TORCH, dev=True), {"pyproject": without["pyproject"], "torch": DEFAULT_TORCH}):
        assert install_commands(venv, DEFAULT_TORCH, pyproject, LINUX, done, has_python=True, dev=False) == []
        assert install_commands(venv, DEFAULT_TORCH, pyproject, LINUX, done, has_python=True, dev=True) == []


@pytest.mark.parametrize("task, dev", [("install", True), ("test", True), ("demo", False), ("run", False)])
def test_each_task_asks_for_the_extra_it_needs(task, dev, monkeypatch, tmp_path):
    asked = []
    monkeypatch.setattr(setup_env, "install", lambda venv, torch, platform, dev: asked.append(dev))
    monkeypatch.setattr(setup_env.subprocess, "call", lambda command, cwd=None: 0)
    assert setup_env.main(["--venv", str(tmp_path), task, *(["-c", "pass"] if task == "run" else [])], LINUX) == 0
    assert asked == [dev]


def test_a_cuda_build_stays_until_torch_is_given_again():
    assert chosen_torch(None, None) == DEFAULT_TORCH
    assert chosen_torch(None, stamp_of(b"", CUDA)) == CUDA  # `setup_env.py test` after the CUDA install
    assert chosen_torch(DEFAULT_TORCH, stamp_of(b"", CUDA)) == DEFAULT_TORCH


def test_task_commands():
    venv = Path(".venv")
    python = str(venv_python(venv, WINDOWS))
    assert task_command("test", ["--runslow"], venv, WINDOWS) == [python, "-m", "pytest", "-q", "--runslow"]
    assert task_command("demo", [], venv, WINDOWS) == [python, "-m", "tools.demo"]
    assert task_command("run", ["-m", "train_head", "--help"], venv, LINUX) == [
        str(venv_python(venv, LINUX)), "-m", "train_head", "--help"]
    with pytest.raises(SetupError, match="run needs what to run"):
        task_command("run", [], venv, LINUX)


@pytest.mark.parametrize("platform, message", [
    (Platform(True, (3, 8), 64, r"C:\Python38\python.exe"),
     r"C:\Python38\python.exe is Python 3.8; gta-drive needs 3.10 or newer: install it from python.org and run "
     r"`py -3 tools\setup_env.py`"),
    (Platform(True, (3, 11), 32, r"C:\Python311-32\python.exe"),
     r"C:\Python311-32\python.exe is a 32-bit Python and PyTorch has no 32-bit builds: install the 64-bit Python "
     r"from python.org and run `py -3 tools\setup_env.py`"),
])
def test_unusable_python_is_one_line(platform, message, capsys):
    assert setup_env.main(["install"], platform=platform) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_bad_torch_spec_is_one_line():
    with pytest.raises(SetupError, match="--torch is empty"):
        install_commands(Path(".venv"), " ", b"", LINUX, None, False)


def test_runs_under_python_alone_and_the_makefile_calls_it(tmp_path):
    r = subprocess.run([sys.executable, "-S", str(ROOT / "tools" / "setup_env.py"), "--help"],
                       capture_output=True, text=True, cwd=tmp_path)  # -S: no site-packages, stdlib only
    assert r.returncode == 0 and "Scripts\\python.exe on Windows" in r.stdout
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}  # under make test
    dry = subprocess.run(["make", "--no-print-directory", "-n", "test", "train", "install", "PYTHON=python3",
                          f"TORCH={CUDA}"], capture_output=True, text=True, cwd=ROOT, env=env)
    if dry.returncode == 127 or "not found" in dry.stderr:
        pytest.skip("no make here")
    lines = dry.stdout.splitlines()
    setup = f'python3 tools/setup_env.py --venv .venv --torch "{CUDA}"'
    assert lines[0] == f"{setup} test" and lines[2] == f"{setup} install"
    assert lines[1].startswith(f"{setup} run -m train_head --cache runs/cache --out runs/train")
    assert "bin/python" not in (ROOT / "Makefile").read_text()


def test_every_cli_has_a_console_command(monkeypatch, capsys):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == set(commands.MODULES)
    wanted = {"record", "import", "inspect", "features", "train", "ablate", "drive", "replay", "bench", "demo"}
    assert wanted <= {name.removeprefix("gta-") for name in scripts}
    for name, target in scripts.items():
        module, function = target.split(":")
        assert module == "tools.commands"
        monkeypatch.setattr(sys, "argv", [name, "--help"])
        with pytest.raises(SystemExit) as e:
            getattr(commands, function)()
        assert e.value.code == 0 and "usage:" in capsys.readouterr().out, name
