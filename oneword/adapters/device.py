"""Where a model runs and in which precision."""

from __future__ import annotations

import torch

from ..errors import OnewordError


def pick_device(device: str | None = None) -> torch.device:
    """`device` if given, else CUDA, then MPS, then CPU."""
    if device:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, dtype: str | None = None) -> torch.dtype:
    """Frozen-weight dtype: bf16 on CUDA that supports it, else fp16 on GPUs, fp32 on CPU."""
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
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32
