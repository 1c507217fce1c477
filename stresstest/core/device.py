"""Device choice and mixed precision."""
import contextlib
import platform
from pathlib import Path

from typing import TypeVar

import torch
import torch.nn as nn

from .errors import UserError

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def resolve_device(name: str) -> torch.device:
    """auto picks cuda, then mps, then cpu; an explicit choice that is unavailable is a user error."""
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device auto or cpu")
    if name == "mps" and not mps:
        raise UserError("--device mps was asked for but MPS is not available; use --device auto or cpu")
    return torch.device(name)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_name(device: torch.device) -> str:
    """The GPU's name on CUDA, else the CPU's (an MPS device is the Mac's own chip)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def describe_device(device: torch.device) -> str:
    """What a record says of the device: its type and the hardware's name."""
    return f"{device.type} ({hardware_name(device)})"


def cpu_has_fast_bf16() -> bool:
    """True where the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_precision(device: torch.device, requested: str = "auto") -> str:
    """'bf16' or 'fp32'. auto: bf16 on CUDA GPUs that support it and on CPUs with native bf16."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_channels_last(model: ModuleT, device: torch.device) -> ModuleT:
    """`model` on `device` in the channels-last layout (fastest for convolutions on CPUs and GPUs alike)."""
    # Module.to takes memory_format (torch._C._nn._parse_to), but torch's overloads of Module.to leave it out
    return model.to(device, memory_format=torch.channels_last)  # pyright: ignore[reportCallIssue]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@contextlib.contextmanager
def seeded(seed: int):
    """torch's global generators seeded for the body and restored after it, for code that draws from them and
    takes no generator (module initialisers, pytorch_grad_cam's ROAD): the caller's random state is untouched."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield
