"""The branches that only run on a CUDA GPU, on Apple's MPS or in a multi-process job, driven here on the CPU with
the torch functions they call replaced by fakes. monkeypatch.setattr refuses a name that torch does not have, and
the code under test calls the real module's attribute, so a misspelt torch call on one of these paths (the
`torch.cuda.get_describe_device` that once shipped in run_info) fails here instead of on every GPU user's run."""
import pytest
import torch
import torch.distributed as dist
import torch.nn as nn

from stresstest.core import distributed
from stresstest.core.device import (autocast, describe_device, hardware_name, pick_precision, resolve_device,
                                    synchronize, to_channels_last)
from stresstest.core.distributed import Ranks
from stresstest.core.errors import UserError
from stresstest.nn.inference import default_eval_batch_size
from stresstest.probe import feature_batch_size
from stresstest.training import TrainConfig, run_info, training_forward

CUDA = torch.device("cuda", 0)
GPU_NAME = "NVIDIA H100 80GB HBM3 (fake)"


@pytest.fixture
def fake_cuda(monkeypatch):
    """A visible CUDA GPU, as far as the functions the project calls can tell; records the calls that act."""
    calls: list[tuple] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: GPU_NAME)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(("synchronize", device)))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    return calls


@pytest.fixture
def fake_mps(monkeypatch):
    calls: list[tuple] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "synchronize", lambda: calls.append(("synchronize",)))
    return calls


def test_auto_picks_a_visible_gpu_then_mps_then_the_cpu(fake_cuda, monkeypatch):
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    with pytest.raises(UserError, match="--device cuda was asked for"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="--device mps was asked for"):
        resolve_device("mps")


def test_a_gpu_is_named_by_cuda_and_the_run_info_says_so(fake_cuda):
    assert hardware_name(CUDA) == GPU_NAME
    assert describe_device(CUDA) == f"cuda ({GPU_NAME})"
    info = run_info(CUDA, "bf16", TrainConfig())
    assert info["device"] == "cuda:0" and info["device_name"] == GPU_NAME and info["precision"] == "bf16"


def test_precision_on_a_gpu_follows_its_bf16_support(fake_cuda, monkeypatch):
    assert pick_precision(CUDA) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert pick_precision(CUDA) == "fp32"
    assert pick_precision(CUDA, "bf16") == "bf16"  # asked for: not second-guessed
    assert pick_precision(torch.device("mps")) == "fp32"


def test_bf16_autocast_targets_the_gpu(fake_cuda):
    context = autocast(CUDA, "bf16")
    assert isinstance(context, torch.autocast)
    assert context.device == "cuda" and context.fast_dtype == torch.bfloat16
    assert not isinstance(autocast(CUDA, "fp32"), torch.autocast)


def test_timings_wait_for_the_gpu_and_for_mps(fake_cuda, fake_mps):
    synchronize(CUDA)
    assert fake_cuda == [("synchronize", CUDA)]
    synchronize(torch.device("mps"))
    assert fake_mps == [("synchronize",)]
    synchronize(torch.device("cpu"))  # nothing to wait for
    assert len(fake_cuda) + len(fake_mps) == 2


def test_gpus_get_large_batches(fake_cuda):
    assert default_eval_batch_size(CUDA) == 1024 and default_eval_batch_size(torch.device("cpu")) == 256
    assert feature_batch_size(CUDA) == 256 and feature_batch_size(torch.device("cpu")) == 32


def test_channels_last_moves_the_model_and_changes_its_layout():
    model = to_channels_last(nn.Conv2d(3, 4, 3), torch.device("cpu"))
    assert model.weight.is_contiguous(memory_format=torch.channels_last)


# -- torchrun ---------------------------------------------------------------------------------------------------

@pytest.fixture
def torchrun_process(monkeypatch):
    """The environment torchrun gives the second process of a two-process job, with the process group faked."""
    joined: list[str] = []
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kwargs: joined.append(backend))
    return joined


def test_a_gpu_process_of_a_torchrun_job_takes_its_local_gpu_and_nccl(fake_cuda, torchrun_process):
    ranks, device = distributed.start("auto")
    assert ranks == Ranks(rank=1, world=2, local_rank=1) and not ranks.main
    assert device == torch.device("cuda", 1)
    assert ("set_device", device) in fake_cuda
    assert torchrun_process == ["nccl"]


def test_more_processes_than_gpus_is_one_clear_line(fake_cuda, torchrun_process, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match="only 1 GPUs are visible; lower --nproc_per_node"):
        distributed.start("cuda")
    assert torchrun_process == []


def test_cpu_processes_join_with_gloo_and_mps_is_refused(fake_mps, torchrun_process, monkeypatch):
    with pytest.raises(UserError, match="not on MPS"):
        distributed.start("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    _, device = distributed.start("auto")
    assert device == torch.device("cpu") and torchrun_process == ["gloo"]


class FakeDDP(nn.Module):
    """Records how DistributedDataParallel was asked to wrap the model (the real one needs a process group)."""

    def __init__(self, module: nn.Module, device_ids=None):
        super().__init__()
        self.module, self.device_ids = module, device_ids


def test_training_replicas_on_gpus_sync_batch_statistics_and_name_their_gpu(monkeypatch):
    monkeypatch.setattr(nn.parallel, "DistributedDataParallel", FakeDDP)

    def model():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))

    alone = model()
    assert training_forward(alone, torch.device("cpu"), Ranks(), compile_model=False) is alone

    on_gpus = model()
    replica = training_forward(on_gpus, torch.device("cuda", 1), Ranks(1, 2, 1), compile_model=False)
    assert isinstance(replica, FakeDDP) and replica.device_ids == [1]
    assert isinstance(replica.module[1], nn.SyncBatchNorm)
    assert replica.module[0].weight is on_gpus[0].weight  # the optimizer's parameters are the ones trained

    on_cpus = training_forward(model(), torch.device("cpu"), Ranks(1, 2, 1), compile_model=False)
    assert isinstance(on_cpus, FakeDDP) and on_cpus.device_ids is None
    assert isinstance(on_cpus.module[1], nn.BatchNorm2d) and not isinstance(on_cpus.module[1], nn.SyncBatchNorm)


def test_compile_wraps_what_the_step_calls(monkeypatch):
    compiled: list[nn.Module] = []

    def fake_compile(module, *args, **kwargs):
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = nn.Linear(2, 2)
    assert training_forward(model, torch.device("cpu"), Ranks(), compile_model=True) is model
    assert compiled == [model]


def test_local_sweeps_give_each_job_one_gpu(fake_cuda, monkeypatch, tmp_path):
    """One job per visible GPU, each told which one: the parameters go through submitit's real LocalExecutor,
    which refuses names it does not know; only the job processes are faked."""
    import submitit

    from stresstest.core.sweep import run_jobs

    asked: list[dict] = []
    real_update = submitit.LocalExecutor.update_parameters

    class DoneJob:
        def __init__(self, value):
            self.value = value

        def done(self):
            return True

        def result(self):
            return self.value

        def cancel(self):
            pass

    def update_parameters(self, **kwargs):
        asked.append(kwargs)
        real_update(self, **kwargs)

    monkeypatch.setattr(submitit.LocalExecutor, "update_parameters", update_parameters)
    monkeypatch.setattr(submitit.LocalExecutor, "submit", lambda self, function, *args: DoneJob(function(*args)))
    results = run_jobs([(abs, (-1,)), (abs, (-2,)), (abs, (-3,))], "local", tmp_path / "submitit")
    assert results == [1, 2, 3]
    assert {tuple(kwargs["visible_gpus"]) for kwargs in asked} <= {(0,), (1,)}
    assert all(kwargs["gpus_per_node"] == 1 for kwargs in asked)

