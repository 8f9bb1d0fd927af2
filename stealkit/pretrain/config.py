"""Pre-training config (paper, Section V-A 1): SimCLR, ResNet18, Adam lr 1e-3, batch 256,
crop+flip+jitter+gray, 1,000 epochs. Unknown keys fail loudly."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator


class DataSpec(BaseModel):
    """A dataset reference: registry name + split (+ optional subset size and root)."""

    model_config = ConfigDict(extra="forbid")
    name: str = "synthetic"
    split: str = "train"
    root: str | None = None
    size: int = 32
    limit: int | None = None  # use a random subset of this many images
    fraction: float | None = None  # or this fraction of the set
    seed: int = 0


class PretrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Literal["simclr", "moco"] = "simclr"
    arch: str = "resnet18"
    data: DataSpec = DataSpec(name="cifar10")
    epochs: int = 1000
    batch_size: int = 256
    lr: float = 1e-3
    optimizer: Literal["adam", "sgd", "adamw"] = "adam"
    weight_decay: float = 1e-6
    momentum: float = 0.9
    temperature: float = 0.5  # SimCLR CIFAR code: 0.5; MoCo v2 CIFAR: 0.1..0.2
    proj_hidden: int = 512
    proj_dim: int = 128
    augment: str = "crop+flip+jitter+gray"
    moco_queue: int = 4096
    moco_momentum: float = 0.99
    moco_bn_splits: int = 8  # MoCo's shuffling BN on one device (split_bn.py); 1 = one BatchNorm over the batch
    seed: int = 0
    checkpoint_every: int = 10
    knn_every: int = 0  # 0: kNN monitor only at the end
    knn_data: DataSpec | None = None  # labelled set for the kNN monitor (train split used as memory bank)
    knn_k: int = 200
    amp: bool = True
    compile: bool = False
    cuda_graph: bool = True  # on CUDA, replay each training step as one captured CUDA graph
    device: str = "auto"
    time_limit_s: float | None = None  # stop (and save) after the epoch that crosses this wall-clock budget

    @model_validator(mode="after")
    def _check_splits(self):
        if self.method == "moco" and (self.moco_bn_splits < 1 or self.batch_size % self.moco_bn_splits):
            raise ValueError(
                f"moco_bn_splits={self.moco_bn_splits} must be >= 1 and divide batch_size={self.batch_size}; "
                "change one of them (moco_bn_splits: 1 turns shuffling BN off)"
            )
        return self
