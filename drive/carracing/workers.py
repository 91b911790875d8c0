"""Jobs run by several processes at once, each with its own torch threads.

On a CPU of few cores the demo drives its tracks this way: one process of one thread per core keeps every
core busy, where one process with a thread per core makes every operation wait for whichever thread the
game or another program has taken the core from (README, "On a CPU without bf16").
"""
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator

import torch


def in_processes(fn: Callable, jobs: list[dict], threads: int) -> list:
    """[fn(**job) for job in jobs], each job in its own spawned process with `threads` torch threads, all at
    once; in this process when there is only one. fn and the jobs must pickle (module-level functions, data).
    A job's exception (a UserError too) is raised here once all have ended."""
    if len(jobs) == 1:
        return [fn(**jobs[0])]
    with _spawned(len(jobs), threads) as pool:
        futures = [pool.submit(fn, **job) for job in jobs]
        return [f.result() for f in futures]


@contextmanager
def own_process(threads: int, env: dict[str, str]) -> Iterator[Callable]:
    """A call(fn, **job) that runs fn(**job) in one spawned process kept for the whole block (the imports and
    torch's start are paid once), with `threads` torch threads and `env` in its environment, for what torch
    reads only as it starts (OMP_WAIT_POLICY); this process's environment is left as it was."""
    with _spawned(1, threads) as pool:
        with _environment(env):
            pool.submit(os.getpid).result()  # the process starts now, while env is set
        yield lambda fn, **job: pool.submit(fn, **job).result()


@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _spawned(processes: int, threads: int) -> ProcessPoolExecutor:
    """Spawned, not forked: Windows' only start method, and no copy of this process's threads."""
    return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_set_threads, initargs=(threads,))


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
