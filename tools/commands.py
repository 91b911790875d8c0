"""The console commands that installing the project puts on the PATH ([project.scripts] in pyproject.toml),
so that an installed environment works from any shell: `gta-train --cache runs/cache --out runs/train` is
`python -m train_head ...`. Each runs one CLI's main() as `python -m` does, errors as one line."""
from importlib import import_module

from data.errors import run_cli

MODULES = {  # console command -> the module whose main() it runs
    "gta-record": "tools.record",
    "gta-import": "tools.import_legacy",
    "gta-inspect": "tools.inspect",
    "gta-features": "extract_features.__main__",
    "gta-train": "train_head.__main__",
    "gta-ablate": "train_head.ablate",
    "gta-ablate-drive": "tools.ablate_drive",
    "gta-drive": "drive.__main__",
    "gta-replay": "tools.replay",
    "gta-bench": "tools.bench.suite",
    "gta-demo": "tools.demo",
}


def _run(command: str) -> None:
    run_cli(import_module(MODULES[command]).main)


def record() -> None:
    _run("gta-record")


def import_legacy() -> None:
    _run("gta-import")


def inspect() -> None:
    _run("gta-inspect")


def features() -> None:
    _run("gta-features")


def train() -> None:
    _run("gta-train")


def ablate() -> None:
    _run("gta-ablate")


def ablate_drive() -> None:
    _run("gta-ablate-drive")


def drive() -> None:
    _run("gta-drive")


def replay() -> None:
    _run("gta-replay")


def bench() -> None:
    _run("gta-bench")


def demo() -> None:
    _run("gta-demo")
