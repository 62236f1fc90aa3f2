"""Where a model runs and in which precision."""

from __future__ import annotations

import torch

from ..errors import OnewordError


def pick_device(device: str | None = None) -> torch.device:
    """`device` if given (and present on this machine), else CUDA, then MPS, then CPU."""
    if device:
        return check_device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, dtype: str | None = None) -> torch.dtype:
    """Frozen-weight dtype: bf16 on CUDA cards that compute it natively (`cuda_dtype`), else
    fp16 on GPUs (trained with loss scaling), fp32 on CPU."""
    names = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "fp16": torch.float16,
        "float16": torch.float16,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
    }
    if dtype:
        if dtype not in names:
            raise OnewordError(f"--dtype {dtype}: choose one of fp32, fp16, bf16")
        return names[dtype]
    if device.type == "cuda":
        return cuda_dtype(torch.cuda.get_device_capability(device), bool(torch.version.hip))
    if device.type == "mps":
        return torch.float16
    return torch.float32


def cuda_dtype(capability: tuple[int, int], rocm: bool = False) -> torch.dtype:
    """bf16 on cards that compute it natively (NVIDIA compute capability 8.0 on: A100, RTX 30xx
    and later; ROCm cards), else fp16. torch.cuda.is_bf16_supported() also counts emulation,
    which T4, V100 and RTX 20xx have: slow, or kernels missing outright."""
    return torch.bfloat16 if rocm or capability[0] >= 8 else torch.float16


def check_device(name: str, here: bool = True) -> torch.device:
    """The device `name` names, refused in one line if it is no device name or (here) this
    machine has no such device."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise OnewordError(
            f"--device {name}: not a device name; give cpu, cuda, cuda:N or mps, "
            "or leave --device out to use the best one here"
        ) from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise OnewordError(f"--device {name}: oneword runs on cpu, cuda or mps; give one of those")
    if device.type == "cpu" or not here:
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise OnewordError(
                f"--device {name}: this machine has no CUDA GPU that torch can use; give "
                "--device cpu, or leave --device out"
            )
        if device.index is not None and device.index >= count:
            raise OnewordError(
                f"--device {name}: this machine has {count} CUDA GPU(s), cuda:0 to "
                f"cuda:{count - 1}; give one of those"
            )
        return device
    if device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise OnewordError(
                f"--device {name}: Apple's MPS is not available on this machine; give "
                "--device cpu, or leave --device out"
            )
    return device
