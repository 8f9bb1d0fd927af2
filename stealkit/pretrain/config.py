"""Pre-training config (StolenEncoder, Liu et al., CCS 2022, arXiv:2201.05889, Section V-A 1): SimCLR,
ResNet18, Adam lr 1e-3, batch 256, crop+flip+jitter+gray, 1,000 epochs. Unknown keys and out-of-range
values fail when the config is built."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class DataSpec(BaseModel):
    """A dataset reference: registry name + split (+ optional subset size and root)."""

    model_config = ConfigDict(extra="forbid")
    name: str = "synthetic"
    split: str = "train"
    root: str | None = None
    size: int = Field(32, ge=8)
    limit: int | None = Field(None, ge=1)  # use a random subset of this many images
    fraction: float | None = Field(None, gt=0, le=1)  # or this fraction of the set
    seed: int = 0


class PretrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Literal["simclr", "moco"] = "simclr"
    arch: str = "resnet18"
    data: DataSpec = DataSpec(name="cifar10")
    epochs: int = Field(1000, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adam", "sgd", "adamw"] = "adam"
    weight_decay: float = Field(1e-6, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    temperature: float = Field(0.5, gt=0)  # SimCLR CIFAR code: 0.5; MoCo v2 CIFAR: 0.1..0.2
    proj_hidden: int = Field(512, ge=1)
    proj_dim: int = Field(128, ge=1)
    augment: str = "crop+flip+jitter+gray"
    moco_queue: int = Field(4096, ge=1)
    moco_momentum: float = Field(0.99, ge=0, le=1)
    moco_bn_splits: int = 8  # MoCo's shuffling BN on one device (split_bn.py); 1 = one BatchNorm over the batch
    seed: int = 0
    checkpoint_every: int = Field(10, ge=1)
    knn_every: int = Field(0, ge=0)  # 0: kNN monitor only at the end
    knn_data: DataSpec | None = None  # labelled set for the kNN monitor (train split used as memory bank)
    knn_k: int = Field(200, ge=1)
    amp: bool = True
    compile: bool = False
    cuda_graph: bool = True  # on CUDA, replay each training step as one captured CUDA graph
    device: str = "auto"
    time_limit_s: float | None = Field(None, gt=0)  # stop (and save) after the epoch that crosses this wall-clock budget

    @model_validator(mode="after")
    def _check_splits(self):
        if self.method == "moco" and (self.moco_bn_splits < 1 or self.batch_size % self.moco_bn_splits):
            raise ValueError(
                f"moco_bn_splits={self.moco_bn_splits} must be >= 1 and divide batch_size={self.batch_size}; "
                "change one of them (moco_bn_splits: 1 turns shuffling BN off)"
            )
        return self
