"""Where tensors run: device choice, moving a batch there and mixed precision on it.

Shared by training and inference, which must place and cast batches the same way.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

from amr.util.errors import AmrError


class DeviceError(AmrError, RuntimeError):
    """The asked-for device is not there."""


def choose_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if requested not in ("auto", "cpu", "cuda"):
        raise DeviceError(f"train.device: expected auto, cpu or cuda, got {requested!r}")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError("train.device is 'cuda' but no CUDA device is visible; use auto or cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def move_batch(batch: dict, device: torch.device) -> dict:
    """Tensors to ``device``; lists of strings stay where they are."""
    non_blocking = device.type == "cuda"
    return {
        k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v
        for k, v in batch.items()
    }


def autocast_context(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when asked (no loss scaling needed), nothing otherwise."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()
