"""python -m tools.bench: the whole suite (see suite.py)."""
from data.errors import run_cli
from tools.bench.suite import main

if __name__ == "__main__":
    run_cli(main)
