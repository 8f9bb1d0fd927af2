"""Device choice, seeding and the environment record stored with every result."""

from __future__ import annotations

import hashlib
import os
import platform
import random
import threading
from contextlib import contextmanager, nullcontext
from functools import lru_cache

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


def _setting(name: str, default: str = "auto") -> str:
    value = os.environ.get(name, default).strip().lower() or default
    if value not in ("auto", "on", "off", "1", "0", "true", "false"):
        raise ValueError(f"${name}={value!r}: use auto, on or off")
    return {"1": "on", "true": "on", "0": "off", "false": "off"}.get(value, value)


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when this CPU computes bf16 in hardware (AMX-BF16 or AVX512-BF16) and oneDNN uses it.
    Measured on a 2-core Xeon with AMX: ResNet18 training 2.4× and inference 2.5× faster in bf16; on an
    AVX2-only AMD EPYC bf16 is emulated and about 20× *slower* (benchmarks/cpu_steal_speed.py)."""
    hw = bool({"amx_bf16", "avx512_bf16"} & cpu_flags())
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        onednn = False
    return hw and onednn


def bf16_enabled(device: torch.device) -> bool:
    """bf16 autocast for training steps: always on CUDA; on CPU where it is fast (`cpu_has_fast_bf16`).
    $STEALKIT_BF16 = auto (default) | on | off overrides it on both."""
    mode = _setting("STEALKIT_BF16")
    if mode != "auto":
        return mode == "on"
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16())


def channels_last_enabled(device: torch.device) -> bool:
    """NHWC tensors for convolutions: faster on CUDA and with oneDNN on CPU (ResNet18 training 1.3×,
    inference 2× on 2 AVX2 cores). $STEALKIT_CHANNELS_LAST = auto (default: on) | on | off."""
    return _setting("STEALKIT_CHANNELS_LAST") != "off" and device.type in ("cpu", "cuda")


def autocast(device: torch.device, enabled: bool = True, cache: bool = True):
    """bf16 autocast where `bf16_enabled(device)` (CUDA; CPUs with bf16 hardware), else a no-op.
    cache=False inside CUDA-graph capture (the autocast weight cache must not outlive it)."""
    if enabled and device.type in ("cuda", "cpu") and bf16_enabled(device):
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache)
    return nullcontext()


def set_threads(n: int | None = None) -> int:
    """Torch's intra-op threads: `n`, else $STEALKIT_THREADS, else every core this process may use. -> the count set."""
    if n is None:
        env = os.environ.get("STEALKIT_THREADS", "").strip()
        if env:
            try:
                n = int(env)
            except ValueError:
                raise ValueError(f"$STEALKIT_THREADS={env!r} is not a whole number") from None
        else:
            n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    return n


def precision_record(device: torch.device) -> dict:
    """What the fast path does on this device, for results and benchmark JSON."""
    return {"bf16_autocast": bf16_enabled(device), "channels_last": channels_last_enabled(device),
            "cpu_fast_bf16": cpu_has_fast_bf16() if device.type == "cpu" else None, "threads": torch.get_num_threads()}


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


def cpu_name() -> str:
    """The CPU's model name (e.g. "AMD EPYC", "Intel(R) Xeon(R) Platinum 8481C")."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_kind_flags() -> list[str]:
    """The CPU flags that decide which kernels run (AVX2 only, AVX512-BF16, AMX), for timing records."""
    return [f for f in SPEED_FLAGS if f in cpu_flags()]


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
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu_name(),
        "threads": torch.get_num_threads(),
        "cpu_bf16_hardware": cpu_has_fast_bf16(),
        "cpu_model": cpu_name(),
        "cpu_flags": cpu_kind_flags(),
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

