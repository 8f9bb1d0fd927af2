"""The settings of a query-and-train attack: `TrainConfig` (how the stolen encoder is trained, shared by
every such attack) and `StealConfig` (TrainConfig plus StolenEncoder's loss settings, Eq. 7: the
trainer's default loss and StolenEncoder's `Config`). Defaults: StolenEncoder's (Liu et al., CCS 2022,
Section V-A, and the authors' released code; `docs/defaults.md` has the whole table).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stealkit.attacks.base import StrictModel


class TrainConfig(StrictModel):
    """How the stolen encoder is trained. Defaults: StolenEncoder's (Section V-A and the released code)."""

    arch: str = "resnet34"
    input_size: int | None = Field(None, ge=8)  # the stolen encoder's input side; None: the surrogate images' side
    cifar_stem: bool | None = None  # 3×3 stride-1 stem, no max-pool; None: when input_size <= 64
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    augment: str = "flip+jitter+gray"
    query_batch_size: int = Field(256, ge=1)
    seed: int = 0
    checkpoint_every: int = Field(10, ge=1)
    amp: bool = True  # bf16 autocast where the device is faster in it (runtime.bf16_enabled)
    cuda_graph: bool = True  # on CUDA, capture the whole training step as one CUDA graph

    def describe(self) -> str:
        opt = f"{self.optimizer.upper() if self.optimizer == 'sgd' else self.optimizer.capitalize()} lr {self.lr:g}"
        if self.optimizer == "sgd":
            opt += f" momentum {self.momentum:g}"
        if self.weight_decay:
            opt += f" wd {self.weight_decay:g}"
        return f"{self.arch}, {self.epochs} epochs, batch {self.batch_size}, {opt}"


class StealConfig(TrainConfig):
    """TrainConfig plus StolenEncoder's loss (Eq. 7): λ, the distance d, normalisation, the batch reduction."""

    lam: float = Field(20.0, ge=0)
    distance: Literal["l2", "l1", "cosine"] = "l2"
    normalize: bool = True
    reduction: Literal["mean", "sum"] = "sum"
    query_aug: bool = False
    # a Linear layer on the pooled features even when the widths agree: answers a ReLU encoder cannot output
    # (negative entries, e.g. a defence's per-account rotation) become reachable; the paper's encoder has none
    fc: bool = False

    def describe(self) -> str:
        norm = "normalised " if self.normalize else ""
        return (f"{super().describe()}; λ={self.lam:g}, {norm}{self.distance} {self.reduction}"
                + (", query-aug" if self.query_aug else "") + (", linear head" if self.fc else ""))
