"""Jobs run by several processes at once, each with its own torch threads.

On a CPU of few cores the demo drives its tracks this way: one process of one thread per core keeps every
core busy, where one process with a thread per core makes every operation wait for whichever thread the
game or another program has taken the core from (README, "On a CPU without bf16").
"""
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

import torch


def in_processes(fn: Callable, jobs: list[dict], threads: int) -> list:
    """[fn(**job) for job in jobs], each job in its own spawned process with `threads` torch threads, all at
    once; in this process when there is only one. fn and the jobs must pickle (module-level functions, data).
    A job's exception (a UserError too) is raised here once all have ended."""
    if len(jobs) == 1:
        return [fn(**jobs[0])]
    with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_set_threads, initargs=(threads,)) as pool:
        futures = [pool.submit(fn, **job) for job in jobs]
        return [f.result() for f in futures]


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
