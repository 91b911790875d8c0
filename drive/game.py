"""The games python -m drive can drive, behind one small protocol: the loop never branches on the game.

A game is a module with NAMES (its --game values), FLAGS (the argparse names of its own options),
add_arguments(parser), check(args) (refusals that need no file read) and drive(agent, controller, args),
which feeds the agent frames (drive.agent: frame → probabilities) and turns its key plans into key presses
(drive.loop with the game's grab and key output). Adding a game is one such module and one line in GAMES.
drive's core names the modules here only as strings, so it never imports a game.
"""
import argparse
import importlib
from types import ModuleType
from typing import Protocol

from drive.agent import Agent
from drive.controller import ControllerSettings

GAMES = {  # --game value → the module that implements it
    "carracing": "drive.carracing.cli",  # the embedded game, top-down
    "carracing_hood": "drive.carracing.cli",  # hood camera, minimap, traffic
    "gta5": "drive.gta5.cli",  # GTA V through the screen
}


class Game(Protocol):
    NAMES: tuple[str, ...]
    FLAGS: tuple[str, ...]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def check(self, args: argparse.Namespace) -> None: ...

    def drive(self, agent: Agent, controller: ControllerSettings, args: argparse.Namespace) -> None: ...


def game_modules() -> list[ModuleType]:
    """Every registered game module, once each, in GAMES order."""
    return [importlib.import_module(name) for name in dict.fromkeys(GAMES.values())]


def load_game(name: str) -> Game:
    return importlib.import_module(GAMES[name])
