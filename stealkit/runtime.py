"""Device choice, seeding and the environment record stored with every result."""

from __future__ import annotations

import hashlib
import os
import platform
import random
import threading
from contextlib import contextmanager, nullcontext

import numpy as np
import torch


def pick_device(name: str | None = None) -> torch.device:
    """`name` ("cpu", "cuda", "cuda:1", "auto"/None) -> a torch.device that exists here."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for but CUDA is not available here; use --device cpu")
    return device


def derived_seed(*parts) -> int:
    """A 63-bit seed derived from any values (SHA-256 of their text): independent streams by name."""
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "little") & (2**63 - 1)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator for explicit draws."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def autocast(device: torch.device, enabled: bool = True, cache: bool = True):
    """bf16 autocast on CUDA; a no-op on CPU (bf16 matmuls on CPU are slower, not faster).
    cache=False inside CUDA-graph capture (the autocast weight cache must not outlive it)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache)
    return nullcontext()


_TF32_LOCK = threading.RLock()


@contextmanager
def exact_fp32(device: torch.device):
    """On CUDA, turn off TF32 (cuDNN convolutions use it by default: ~2⁻¹¹ relative error, as coarse as a
    3-decimal rounding defence) for what this block computes; restored afterwards. No-op elsewhere.
    The settings are process-wide: blocks are serialised by a lock. Matmuls go through
    `torch.set_float32_matmul_precision`, which keeps torch's legacy and new settings in agreement
    (mixing them is an error); convolutions through `cudnn.conv.fp32_precision` (torch >= 2.9)."""
    if device.type != "cuda":
        yield
        return
    with _TF32_LOCK:
        matmul, conv = torch.get_float32_matmul_precision(), torch.backends.cudnn.conv.fp32_precision
        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(matmul)
            torch.backends.cudnn.conv.fp32_precision = conv


def environment() -> dict:
    """Versions and device, written beside every checkpoint and result."""
    import stealkit

    env = {
        "stealkit": stealkit.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
    }
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        import kornia

        env["kornia"] = kornia.__version__
    except ImportError:  # pragma: no cover
        pass
    return env

