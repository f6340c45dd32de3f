"""bfloat16 autocast where the device runs it natively, float32 elsewhere."""

from __future__ import annotations

import contextlib

import torch


def mixed_precision(device, enabled: bool):
    """bfloat16 autocast where the hardware runs it natively, otherwise nothing."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def bf16_native(device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:  # AVX512-BF16 / AMX: oneDNN runs bfloat16 convolutions and matmuls natively
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
