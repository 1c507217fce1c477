"""Data-parallel training: two gloo processes on the CPU against one process with the same global batch.

Every process draws the same shuffle and the same augmentation for the whole global batch and keeps its share,
so on a model without BatchNorm two processes compute what one does (up to the order of float sums); with
BatchNorm each process normalises by its own half batch, so the match is only close."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from conftest import MACHINERY_ARCH, REPO, assert_user_error, run_stage_in_process
from stresstest.core.architecture import build_architecture
from stresstest import probe, training
from stresstest.core import distributed
from stresstest.core.distributed import Ranks
from stresstest.training import Trainer, TrainConfig

# 162 training images: 5 steps of 32; fp32, as the tolerances below are fp32's (bf16 steps differ by about 1e-2)
CONFIG = TrainConfig(epochs=1, batch_size=32, max_train_images=180, lr=0.05, seed=3, val_fraction=0.1,
                     precision="fp32")


def strip_batchnorm(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        setattr(module, name, nn.Identity()) if isinstance(child, nn.BatchNorm2d) else strip_batchnorm(child)
    return module


def one_epoch(data_dir: Path, batchnorm: bool, ranks: Ranks = Ranks()) -> dict:
    if not batchnorm:
        training.build_architecture = lambda arch, classes: strip_batchnorm(build_architecture(arch, classes))
    try:
        trainer = Trainer(CONFIG, data_dir, torch.device("cpu"), ranks)
        loss, accuracy, _ = trainer._train_epoch(1)
    finally:
        training.build_architecture = build_architecture
    return {"loss": loss, "accuracy": accuracy, "state": trainer.model.state_dict()}


def ddp_worker(rank: int, data_dir: str, folder: str, batchnorm: bool) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2)
    result = one_epoch(Path(data_dir), batchnorm, Ranks(rank, 2, rank))
    if rank == 0:
        torch.save(result, Path(folder) / "ddp.pt")
    dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes that import torch: tens of seconds
@pytest.mark.parametrize("batchnorm", [False, True])
def test_two_processes_match_one_with_the_same_global_batch(batchnorm, tiny_data, tmp_path):
    mp.spawn(ddp_worker, args=(str(tiny_data), str(tmp_path), batchnorm), nprocs=2)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    single = one_epoch(tiny_data, batchnorm)
    if batchnorm:  # per-process batch statistics: close, not equal
        assert ddp["loss"] == pytest.approx(single["loss"], rel=0.05)
        return
    assert ddp["loss"] == pytest.approx(single["loss"], rel=1e-5) and ddp["accuracy"] == single["accuracy"]
    for name, value in single["state"].items():
        torch.testing.assert_close(ddp["state"][name], value, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").is_file(),
                    reason="torchrun not found beside this Python")
def test_torchrun_writes_what_one_process_writes_and_resumes(tiny_data, tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    args = [str(REPO / "train.py"), "--data-dir", str(tiny_data), "--device", "cpu", "--smoke", "--arch",
            MACHINERY_ARCH, "--max-train-images", "128", "--epochs", "2"]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, *args, "--out-dir", "one"], cwd=tmp_path, check=True, capture_output=True)
    result = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", *args, "--out-dir", "two"],
                            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert result.stdout.count("epoch   1/2") == 1  # one process prints
    metrics = pd.read_csv(tmp_path / "two" / "metrics.csv")
    assert list(metrics.epoch) == [1, 2] and metrics.val_acc.notna().all()
    saved = torch.load(tmp_path / "two" / "best_model.pth", weights_only=True)
    assert not any(key.startswith("module.") for key in saved["state_dict"])  # the plain model, not the DDP wrapper
    more = [*args[:-1], "3", "--out-dir", "two", "--resume"]
    result = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", *more], cwd=tmp_path,
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(pd.read_csv(tmp_path / "two" / "metrics.csv").epoch) == [1, 2]  # --resume keeps the saved config


def worker_of_rank(launcher: int, rank: int) -> int:
    """PID of the torchrun worker of `rank` among the children of the torchrun process `launcher`."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # a process that ended while we looked
        if parent == launcher and f"RANK={rank}".encode() in environ:
            return int(stat.parent.name)
    raise LookupError(f"no worker of rank {rank} under process {launcher}")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="finds torchrun's workers through /proc (Linux)")
def test_killing_one_process_fails_the_job_clearly_and_resume_continues(tiny_data, tmp_path):
    """A preempted or crashed rank: the job stops with one clear line, the finished epochs stay on disk, and the
    same command with --resume trains the rest."""
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    command = [torchrun, "--standalone", "--nproc_per_node", "2", str(REPO / "train.py"), "--data-dir",
               str(tiny_data), "--device", "cpu", "--smoke", "--epochs", "5", "--max-train-images", "128",
               "--out-dir", "run"]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    job = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=env)
    state = tmp_path / "run" / training.STATE_FILE
    deadline = time.monotonic() + 300
    while not state.is_file() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.poll() is None, "the job ended before its first epoch was saved: " + job.communicate()[1][-2000:]
    os.kill(worker_of_rank(job.pid, 1), signal.SIGKILL)
    out, err = job.communicate(timeout=300)
    assert job.returncode != 0
    # rank 0 stops either by torchrun's SIGTERM or by a collective failing first: one clear line either way
    assert re.search(r"rerun the same command( \(training:)? with --resume", err), err[-3000:]
    assert str(REPO / "stresstest") not in err and 'train.py", line' not in err  # no traceback from our code
    done = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert 1 <= len(done) < 5 and list(done.epoch) == list(range(1, len(done) + 1))
    result = subprocess.run([*command, "--resume"], cwd=tmp_path, capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming {Path('run')} after epoch" in result.stderr
    assert list(pd.read_csv(tmp_path / "run" / "metrics.csv").epoch) == list(range(1, 6))


def lose_peer(*args, **kwargs):
    """Another node's process died and the collective failed here before torchrun stopped this process."""
    raise dist.DistBackendError("Connection closed by peer")


def lose_peer_in_buffer_broadcast(*args, **kwargs):
    """What gloo raises from DDP's buffer broadcast in the forward pass: a plain RuntimeError."""
    raise RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:61585. This is "
                       "typically caused by a remote worker crashing.\nmore")


@pytest.mark.parametrize("lose", [lose_peer, lose_peer_in_buffer_broadcast])
@pytest.mark.parametrize("script, stage_function, advice", [
    ("train.py", (training, "train_on"), "rerun the same command with --resume"),
    ("probing/extract_features.py", (probe, "load_probe"), "rerun the same command")])
def test_a_lost_peer_is_one_clear_line(script, stage_function, advice, lose, monkeypatch, tmp_path):
    monkeypatch.setattr(*stage_function, lose)
    # a plain RuntimeError counts as a lost peer only in a multi-process job: this process believes it is rank 0 of 2
    monkeypatch.setattr(distributed, "start", lambda device_name: (Ranks(0, 2), torch.device("cpu")))
    monkeypatch.setattr(distributed, "finish", lambda ranks: None)
    result = run_stage_in_process(script, "--data-dir", tmp_path, "--device", "cpu", cwd=tmp_path)
    assert_user_error(result, "another process of this torchrun job failed", "Connection closed by peer", advice)


def test_other_runtime_errors_are_not_called_a_lost_peer(monkeypatch):
    """A bug in a multi-process job keeps its traceback; only the transport's own messages mean a lost peer."""
    monkeypatch.setattr(distributed, "start", lambda device_name: (Ranks(0, 2), torch.device("cpu")))
    monkeypatch.setattr(distributed, "finish", lambda ranks: None)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        with distributed.torchrun_job("cpu", "rerun the same command"):
            raise RuntimeError("shape mismatch")


@pytest.mark.slow
def test_sharded_feature_extraction_equals_one_process(tmp_path):
    """torchrun splits study B's images among two processes; the merged cache equals a one-process extraction."""
    from conftest import write_cifar

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    data = write_cifar(tmp_path / "micro", per_batch=6, test_count=13, seed=5)  # odd counts: unequal shards
    args = [str(REPO / "probing" / "extract_features.py"), "--data-dir", str(data), "--model", "efficientnet_lite0",
            "--weights", "none", "--device", "cpu", "--batch-size", "8", "--precision", "fp32"]  # fp32's tolerances
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", *args, "--out-dir", "two"],
                            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    subprocess.run([sys.executable, *args, "--out-dir", "one"], cwd=tmp_path, check=True, capture_output=True)
    two = torch.load(tmp_path / "two" / "efficientnet_lite0" / "features.pt", weights_only=True)
    one = torch.load(tmp_path / "one" / "efficientnet_lite0" / "features.pt", weights_only=True)
    assert two["settings"] == one["settings"] and two["train"].shape == (30, 1280) and two["test"].shape == (13, 1280)
    for split in ["train", "test"]:
        torch.testing.assert_close(two[split], one[split], rtol=1e-4, atol=1e-5)
    assert not list((tmp_path / "two" / "efficientnet_lite0").glob("*.shard*"))  # merged and removed


def test_merging_shards_checks_coverage(tmp_path):
    from stresstest.probe import merge_shards

    def shard(name, indices):
        path = tmp_path / name
        torch.save({"indices": torch.tensor(indices), "features": torch.tensor(indices).float()[:, None]}, path)
        return path

    merged = merge_shards([shard("a", [0, 2, 4]), shard("b", [1, 3])], 5)
    assert merged[:, 0].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="cover 4 of 5 images with 1 duplicates"):
        merge_shards([shard("a", [0, 2, 2]), shard("b", [1, 3])], 5)
