"""Independent jobs (seeds x models) through submitit: one SLURM job array on a cluster, else local processes,
one per visible device at a time (GPUs: one job per GPU; a CPU-only machine: one job after another).

`launcher`: 'inline' runs the jobs in this process, one after another (no submitit); 'local' and 'slurm'
force submitit's executor; 'auto' takes SLURM when `sbatch` is on the PATH, else local."""
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from .errors import UserError

LAUNCHERS = ["inline", "auto", "local", "slurm"]
POLL_SECONDS = 2.0


def resolve_launcher(launcher: str) -> str:
    if launcher == "auto":
        return "slurm" if shutil.which("sbatch") else "local"
    if launcher == "slurm" and not shutil.which("sbatch"):
        raise UserError("--launcher slurm needs SLURM's sbatch on the PATH; use --launcher local or auto")
    return launcher


def run_jobs(jobs: list[tuple[Callable, tuple]], launcher: str, folder: Path, timeout_min: int = 24 * 60,
             slurm: dict | None = None) -> list:
    """The return values of `jobs` ((function, args), in order) run by `launcher`; submitit's logs and
    pickles go to `folder`. `slurm`: extra executor parameters (partition, account, ...) for SLURM."""
    launcher = resolve_launcher(launcher)
    if launcher == "inline":
        return [function(*args) for function, args in jobs]
    import submitit  # only the sweep needs it

    if launcher == "slurm":
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(timeout_min=timeout_min, gpus_per_node=1, tasks_per_node=1, nodes=1,
                                   slurm_array_parallelism=len(jobs), name="cnn-stress-testing",
                                   **(slurm or {}))
        with executor.batch():  # one job array
            submitted = [executor.submit(function, *args) for function, args in jobs]
        return [job.result() for job in submitted]
    devices = list(range(torch.cuda.device_count())) or [None]  # None: the CPU, one job at a time
    pending = list(enumerate(jobs))
    running: dict = {}  # device -> (position, job)
    results: list = [None] * len(jobs)
    try:
        while pending or running:
            for device in [d for d in devices if d not in running][:len(pending)]:
                position, (function, args) = pending.pop(0)
                executor = submitit.LocalExecutor(folder=folder)
                gpus = {} if device is None else {"gpus_per_node": 1, "visible_gpus": [device]}
                executor.update_parameters(timeout_min=timeout_min, **gpus)
                running[device] = (position, executor.submit(function, *args))
            for device, (position, job) in list(running.items()):
                if job.done():
                    del running[device]
                    results[position] = job.result()  # raises the job's error, with its log's path
            if running:
                time.sleep(POLL_SECONDS)
    finally:
        for _, job in running.values():  # a failed job stops the sweep: no orphans left running
            job.cancel()
    return results
