"""Pick the device and dtype a pipeline runs on.

CUDA runs bf16 where the card supports it (fp16 gave NaN in practice on some setups) else fp16;
Apple MPS runs fp16; CPU runs fp32 (half precision on CPU is slow and lossy).
"""

from __future__ import annotations

import re
from typing import Any

DTYPE_NAMES = ("bf16", "fp16", "fp32")


def check_names(device: str | None, dtype: str | None) -> None:
    """Refuse a misspelt device or dtype when the engine is built, not at the first image."""
    if device is not None and not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
        raise ValueError(f"--device: {device!r} is not cpu, mps, cuda or cuda:N")
    if dtype is not None and dtype not in DTYPE_NAMES:
        raise ValueError(f"--dtype: {dtype!r} is not one of {', '.join(DTYPE_NAMES)}")


def choose_device(preferred: str | None = None) -> str:
    """``preferred`` if given ("cuda", "cuda:1", "mps", "cpu"), else the best available."""
    import torch

    if preferred:
        if preferred.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device: {preferred!r} asked for but CUDA is not available; use cpu")
        if preferred == "mps" and not torch.backends.mps.is_available():
            raise ValueError("device: 'mps' asked for but MPS is not available; use cpu")
        return preferred
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def choose_dtype(device: str, preferred: str | None = None) -> Any:
    """A torch dtype: ``preferred`` ("bf16", "fp16", "fp32") or the default for ``device``."""
    import torch

    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if preferred:
        if preferred not in table:
            raise ValueError(f"dtype: {preferred!r} is not one of {', '.join(DTYPE_NAMES)}")
        return table[preferred]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def release_device_memory(device: str) -> None:
    """Return cached allocator memory to the system after models were dropped."""
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device == "mps" and torch.backends.mps.is_available():
        torch.mps.empty_cache()
