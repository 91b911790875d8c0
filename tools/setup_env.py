"""Set up gta-drive and run it, on Windows, Linux or macOS, with Python alone (no make, no bash).

    python tools/setup_env.py demo      # Windows (PowerShell): py -3 tools\\setup_env.py demo
    python tools/setup_env.py test      # extra arguments go to pytest: ... test --runslow
    python tools/setup_env.py install   # only the virtual environment
    python tools/setup_env.py run -m train_head --cache runs/cache --out runs/train
    python tools/setup_env.py --torch "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126" install
    python tools/setup_env.py clean     # remove the virtual environment

install creates the virtual environment (.venv; its Python is .venv\\Scripts\\python.exe on Windows,
.venv/bin/python elsewhere), installs PyTorch first, pinned (torch==2.13.0: PyPI's wheel is the CPU build on
Windows and macOS; on Linux it bundles CUDA, and the CPU-only build is
--torch "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"), then the project; install and test
add its dev extra (pytest, hypothesis, transformers: half a minute that demo and run go without). It is redone
only when pyproject.toml changes; another --torch recreates the environment (pip would
keep a build that satisfies the same version), and later calls without --torch keep the build installed.
demo, test and run install first when needed. The Makefile's targets call this same script.
Standard library only: it runs before anything is installed.
"""
from __future__ import annotations  # an older Python must get as far as check_interpreter's message

import os
import sys

# Run as a script, this folder comes first on sys.path, where tools/inspect.py would stand in for the standard
# library's inspect module (which dataclasses imports): take the folder off.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TORCH = "torch==2.13.0"  # pinned: a range would pull newer, larger builds; see the docstring for builds
MIN_PYTHON = (3, 10)
STAMP = ".installed"  # in the venv: what it was installed from (pyproject.toml digest, --torch, dev extra)


class SetupError(Exception):
    """A problem the user fixes; printed as one line, exit code 2."""


@dataclass(frozen=True)
class Platform:
    """What the set-up depends on, injectable so that tests cover Windows on any OS."""

    windows: bool
    version: tuple[int, int]
    bits: int
    executable: str

    @classmethod
    def current(cls) -> "Platform":
        return cls(windows=os.name == "nt", version=tuple(sys.version_info[:2]),
                   bits=64 if sys.maxsize > 2 ** 32 else 32, executable=sys.executable)


def venv_python(venv: Path, platform: Platform) -> Path:
    return venv / "Scripts" / "python.exe" if platform.windows else venv / "bin" / "python"


def check_interpreter(platform: Platform) -> None:
    """Refuse a Python that cannot run the project. (The Microsoft Store's `python` stub never gets here: it
    prints 'Python was not found ...' itself; the README says to use `py -3` or install from python.org.)"""
    launcher = "py -3 tools\\setup_env.py" if platform.windows else "python3 tools/setup_env.py"
    if platform.version < MIN_PYTHON:
        raise SetupError(f"{platform.executable} is Python {'.'.join(map(str, platform.version))}; gta-drive needs "
                         f"{'.'.join(map(str, MIN_PYTHON))} or newer: install it from python.org and run `{launcher}`")
    if platform.bits != 64:
        raise SetupError(f"{platform.executable} is a 32-bit Python and PyTorch has no 32-bit builds: install the "
                         f"64-bit Python from python.org and run `{launcher}`")


def stamp_of(pyproject: bytes, torch: str, dev: bool = True) -> dict:
    return {"pyproject": hashlib.sha256(pyproject).hexdigest(), "torch": torch, "dev": dev}


def read_stamp(venv: Path) -> dict | None:
    try:
        return json.loads((venv / STAMP).read_text())
    except (OSError, ValueError):  # absent, or an empty file from an older Makefile
        return None


def chosen_torch(flag: str | None, stamp: dict | None) -> str:
    """--torch when given, else what the environment was installed with (a CUDA build stays), else the CPU pin."""
    return flag or (stamp or {}).get("torch") or DEFAULT_TORCH


def install_commands(venv: Path, torch: str, pyproject: bytes, platform: Platform, stamp: dict | None,
                     has_python: bool, dev: bool = True) -> list[list[str]]:
    """The commands that bring the venv up to date (none when it is); run in the repository root. dev: with the
    dev extra (tests); an environment that has it is up to date without it too."""
    python = str(venv_python(venv, platform))
    project = [python, "-m", "pip", "install", "-q", "-e", ".[dev]" if dev else "."]
    wanted = stamp_of(pyproject, torch, dev)
    if has_python and stamp and all(stamp.get(k) == wanted[k] for k in ("pyproject", "torch")):
        if stamp.get("dev", True) or not dev:  # stamps written before "dev" was recorded come from installs with it
            return []
        return [project]  # only the dev extra is missing
    create = [platform.executable, "-m", "venv", str(venv)]
    if has_python and stamp is not None and stamp.get("torch") != torch:
        create.append("--clear")  # another torch build: start from an empty environment
    elif has_python:
        create = None  # pyproject.toml changed: install again into the same environment
    commands = [create] if create else []
    try:
        torch_args = shlex.split(torch)
    except ValueError as e:
        raise SetupError(f"--torch {torch!r}: {e}") from None
    if not torch_args:
        raise SetupError("--torch is empty; the default is " + DEFAULT_TORCH)
    commands += [[python, "-m", "pip", "install", "-q", *torch_args], project]
    return commands


def task_command(task: str, args: list[str], venv: Path, platform: Platform) -> list[str]:
    """The command of demo, test or run, in the venv's Python."""
    python = str(venv_python(venv, platform))
    if task == "test":
        return [python, "-m", "pytest", "-q", *args]
    if task == "demo":
        return [python, "-m", "tools.demo", *args]
    if task == "run":
        if not args:
            raise SetupError("run needs what to run, e.g. `run -m train_head --help`")
        return [python, *args]
    raise SetupError(f"unknown task {task!r}")


def call(command: list[str], cwd: Path | None = None) -> None:
    try:
        code = subprocess.call(command, cwd=cwd)
    except OSError as e:
        raise SetupError(f"cannot run {command[0]}: {e.strerror}") from None
    if code:
        raise SetupError(f"`{shlex.join(command)}` failed (exit code {code}); see its output above")


def install(venv: Path, torch_flag: str | None, platform: Platform, dev: bool = True, say=print) -> None:
    pyproject, stamp = (ROOT / "pyproject.toml").read_bytes(), read_stamp(venv)
    torch = chosen_torch(torch_flag, stamp)
    commands = install_commands(venv, torch, pyproject, platform, stamp, venv_python(venv, platform).exists(), dev)
    for command in commands:
        say(f"setup: {shlex.join(command)}")
        call(command, cwd=ROOT)
    if commands:
        (venv / STAMP).write_text(json.dumps(stamp_of(pyproject, torch, dev)))
        say(f"setup: {venv} is ready ({venv_python(venv, platform)})")


def main(argv: list[str] | None = None, platform: Platform | None = None) -> int:
    p = argparse.ArgumentParser(prog="setup_env.py", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--venv", type=Path, default=ROOT / ".venv", help="virtual environment folder (default: .venv)")
    p.add_argument("--torch", help=f"what pip installs for PyTorch (default: what .venv has, else {DEFAULT_TORCH}, "
                                   "the CPU build on Windows and macOS); with an NVIDIA GPU e.g. "
                                   "\"torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126\"")
    p.add_argument("task", choices=["install", "test", "demo", "run", "clean"],
                   help="install: the venv only (with the dev extra); test / demo: install if needed (test with "
                        "the dev extra), then run; run: the venv's python with the arguments that follow; clean: "
                        "remove the venv")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for pytest, the demo, or python (run)")
    args = p.parse_args(argv)
    platform = platform or Platform.current()
    try:
        check_interpreter(platform)
        venv = args.venv if args.venv.is_absolute() else Path.cwd() / args.venv
        if args.task == "clean":
            shutil.rmtree(venv, ignore_errors=True)
            return 0
        command = task_command(args.task, args.args, venv, platform) if args.task != "install" else None
        install(venv, args.torch, platform, dev=args.task in ("install", "test"))
        if command is None:
            return 0
        return subprocess.call(command, cwd=ROOT if args.task != "run" else None)
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
