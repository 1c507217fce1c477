"""The sweep's local fallback (no SLURM here): submitit processes, one after another on a CPU-only machine."""
import os
import sys
import time

import cloudpickle
import pytest

from stresstest.core.sweep import resolve_launcher, run_jobs

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the job processes cannot import this test module


def timed(path, value):
    started = time.time()
    time.sleep(0.3)
    path.write_text(f"{started} {time.time()} {os.getpid()}")
    return value * 2


def failing():
    raise ValueError("this job fails")


@pytest.mark.slow  # each job is a new Python process
def test_local_jobs_run_in_their_own_processes_one_at_a_time(tmp_path):
    assert resolve_launcher("auto") == "local"  # no sbatch here
    results = run_jobs([(timed, (tmp_path / f"{i}.txt", i)) for i in range(3)], "local", tmp_path / "submitit")
    assert results == [0, 2, 4]
    spans = [tuple(float(x) for x in (tmp_path / f"{i}.txt").read_text().split()) for i in range(3)]
    assert len({pid for _, _, pid in spans} | {os.getpid()}) == 4  # three processes, none of them this one
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(2))  # one device (the CPU): no overlap


@pytest.mark.slow
def test_a_failing_job_stops_the_sweep_with_its_error(tmp_path):
    with pytest.raises(Exception, match="this job fails"):
        run_jobs([(failing, ())], "local", tmp_path / "submitit")


def test_inline_runs_in_this_process(tmp_path):
    assert run_jobs([(timed, (tmp_path / "a.txt", 5))], "inline", tmp_path) == [10]
    assert (tmp_path / "a.txt").read_text().split()[2] == str(os.getpid())
