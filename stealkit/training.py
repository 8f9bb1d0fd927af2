"""Pieces shared by every training loop: optimisers, per-epoch seeds, resumable train state.

Resume contract: a loop that saves `TrainState` at the end of epoch e and is restarted gives the
same weights as an uninterrupted run, because every random draw of epoch e (shuffle order,
augmentation parameters) comes from `epoch_seed(seed, e)`, not from state carried across epochs.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn


def make_optimizer(params, name: str = "adam", lr: float = 1e-3, momentum: float = 0.9, weight_decay: float = 0.0,
                   device: torch.device | None = None, capturable: bool = False):
    """"adam" | "sgd" | "adamw" -> torch optimiser (fused on CUDA; capturable for CUDA-graph capture)."""
    cuda = device is not None and device.type == "cuda"
    adam_kw = {"fused": True, "capturable": capturable} if cuda else {}
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **adam_kw)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **adam_kw)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **({"foreach": True} if cuda else {}))
    raise ValueError(f"unknown optimizer {name!r}; choose adam, adamw or sgd")


def epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7919) % (2**63 - 1)


def epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(epoch_seed(seed, epoch))


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed the global RNGs (used by kornia's per-sample draws) for this epoch."""
    torch.manual_seed(epoch_seed(seed, epoch))


class TrainState:
    """Resumable state of a training loop: module(s), optimiser, finished epochs, metric log.

    Saved with torch.save and loaded with weights_only=True (tensors and plain containers only).
    """

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None

    def save(self, modules: dict[str, nn.Module], optimizer, epoch: int, log: list[dict], extra: dict | None = None) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        blob = {
            "modules": {k: m.state_dict() for k, m in modules.items()},
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "log": log,
            "extra": extra or {},
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, self.path)

    def load(self, modules: dict[str, nn.Module], optimizer, map_location="cpu") -> tuple[int, list[dict], dict]:
        """Restore into modules/optimizer; returns (finished epochs, log, extra); (0, [], {}) if none saved."""
        if self.path is None or not self.path.exists():
            return 0, [], {}
        blob = torch.load(self.path, map_location=map_location, weights_only=True)
        try:
            for k, m in modules.items():
                m.load_state_dict(blob["modules"][k])
            optimizer.load_state_dict(blob["optimizer"])
        except (RuntimeError, KeyError, ValueError) as exc:
            if isinstance(exc, RuntimeError) and "state_dict" not in str(exc):
                raise  # not a layout mismatch (e.g. out of memory)
            detail = " ".join(str(exc).split())[:600]
            raise RuntimeError(
                f"cannot resume from {self.path}: it was written for another model layout (another stealkit version "
                f"or other settings, e.g. MoCo's moco_bn_splits). Resume with the settings that wrote it, or delete "
                f"the file to start over. ({detail})"
            ) from exc
        return int(blob["epoch"]), list(blob["log"]), dict(blob.get("extra", {}))


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move to `device`, NHWC weights where `runtime.channels_last_enabled` (CUDA, and CPU with oneDNN)."""
    from stealkit.runtime import channels_last_enabled

    model = model.to(device)
    if channels_last_enabled(device):
        model = model.to(memory_format=torch.channels_last)
    return model
