"""Cont-Steal (Sha, He, Yu, Backes, Zhang, "Can't Steal? Cont-Steal! Contrastive Stealing Attacks Against
Image Encoders", CVPR 2023, arXiv:2201.07513), two registered forms.

"cont-steal" (the released code, zeyangsha/Cont-Steal `contrastive_steal.py`, `train_representation.py`,
`Loss.py`, `utils.py`, `surrogate_model.py`): every epoch the *same* augmented image A(x) goes to the target
and to the stolen encoder (e·|D| queries, each epoch's payment journaled the moment it is billed), and the
loss is the symmetric NT-Xent over the concatenated embeddings [f_s(A(x)); f_t(A(x))] (negatives from both
encoders), τ = 0.5; batch 32, Adam lr 3e-4. A is the released `random_transform`: RandAugment(2, 14), then
RandomCrop(size, padding=4), then a horizontal flip ("randaugment+padcrop+flip"), at the images' own size;
`augment: crop+flip+jitter+gray` gives stealkit's earlier SimCLR-style A. The released stolen ResNet18 is
torchvision's with `num_classes=512`, i.e. it keeps its `fc` Linear(512, 512) after the pool and the loss
sees that layer's output: `fc: true` (default) puts a Linear layer to the target's D on the pooled
features even when the widths agree; `fc: false` gives the pooled features (a Linear only where widths differ).

"cont-steal-fixed-view" (stealkit's earlier |D|-query form): the target is asked once per clean image;
anchor f_s(A(x_i)), positive f_t(x_i), negatives f_t(x_j), j ≠ i (optionally the other stolen embeddings
too: `stolen_negatives`), τ = 0.1; Adam lr 1e-3, batch 64.
Shapes: surrogate uint8 N×3×H×W, answers N×D, stolen encoder N×3×H×W -> N×D.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stealkit.attacks.base import register_attack
from stealkit.attacks.query_train import QueryTrainAttack
from stealkit.attacks.steal_config import TrainConfig
from stealkit.losses.cont_steal import ContStealAnchorLoss
from stealkit.losses.infonce import InfoNCELoss


class ContStealConfig(TrainConfig):
    batch_size: int = Field(32, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    augment: str = "randaugment+padcrop+flip"  # the released `random_transform`
    temperature: float = Field(0.5, gt=0)
    fc: bool = True  # a Linear layer on the pooled features, to the target's D (the released resnet18(num_classes=512))

    def describe(self) -> str:
        head = ", fc head" if self.fc else ""
        return (f"same A(x) ({self.augment}) to both encoders each epoch, symmetric NT-Xent τ={self.temperature:g}{head}; "
                f"{super().describe()}")


@register_attack("cont-steal")
class ContSteal(QueryTrainAttack):
    """Cont-Steal as released: e·|D| queries of augmented images, symmetric NT-Xent."""

    Config = ContStealConfig

    def make_loss(self):
        return InfoNCELoss({"temperature": self.config.temperature}, stolen_view="aug", target_view="aug")


class ContStealFixedViewConfig(TrainConfig):
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    weight_decay: float = Field(0.0, ge=0)
    temperature: float = Field(0.1, gt=0)
    stolen_negatives: bool = False

    def describe(self) -> str:
        return f"f_t(x) asked once, anchor f_s(A(x)), τ={self.temperature:g}; {super().describe()}"


@register_attack("cont-steal-fixed-view")
class ContStealFixedView(QueryTrainAttack):
    """Cont-Steal's loss on a fixed clean view of the target: exactly |D| queries."""

    Config = ContStealFixedViewConfig

    def make_loss(self):
        c = self.config
        return ContStealAnchorLoss({"temperature": c.temperature, "stolen_negatives": c.stolen_negatives},
                                   stolen_view="aug", target_view="clean")
