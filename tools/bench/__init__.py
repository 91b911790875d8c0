"""The benches: each figure of bench/results.md is timed by one module here (backbone, extract, read, train,
drive, keys, scale), on data made by data.py and described by machine.py; suite.py runs them all and
report.py writes the results. `python -m tools.bench` runs the suite; gpu.py and cpu_paths.py are separate
runs (`python -m tools.bench.gpu`, `python -m tools.bench.cpu_paths`)."""
