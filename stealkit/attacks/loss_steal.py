"""Stealing with the ICML 2022 losses (Dziedzic, Dhawan, Kaleem, Guan, Papernot, "On the Difficulty of
Defending Self-Supervised Learning against Model Extraction", ICML 2022, arXiv:2205.07890): MSE, InfoNCE,
Soft Nearest Neighbours, Wasserstein — registered "steal-mse", "steal-infonce", "steal-softnn",
"steal-wasserstein". Each is its loss (stealkit/losses/) plus a training protocol, chosen by `protocol`:

- "augmented" (default; the authors' blog: "we query the victim encoder with the first augmentation and
  our stolen copy with the second"): every epoch the target is asked for f_t(A(x)) of a fresh augmentation
  of every image (e·|D| queries, billed and journaled per epoch like Cont-Steal's), and the stolen encoder
  sees a second, independent draw A'(x) of the same augmenter (`augment`) of the same image (view "aug2");
  Adam lr 1e-3, batch 64, no weight decay.
- "released" (the released code, cleverhans-lab/ssl-attacks-defenses `steal.py` and `simclr.py` `steal()`):
  for these four losses `n_views=1`, a `RegularDataset` whose transform is `ToTensor()` only, and the same
  batch goes to the victim and the stolen model: one clean view for both encoders (|D| queries, asked once
  and cached); Adam with weight decay 1e-4 and per-loss settings: InfoNCE batch 256, lr 3e-4, τ 0.07;
  SoftNN batch 256, lr 1e-3, T 100; MSE and Wasserstein batch 64, lr 1e-3.
Any setting given explicitly wins over the protocol's. The report's "settings" column says which ran.
Shapes: surrogate uint8 N×3×H×W, answers N×D, stolen encoder N×3×H×W -> N×D.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from stealkit.attacks.base import register_attack
from stealkit.attacks.query_train import QueryTrainAttack
from stealkit.attacks.steal_config import TrainConfig
from stealkit.losses.base import StealLoss
from stealkit.losses.infonce import InfoNCELoss
from stealkit.losses.mse import MSELoss
from stealkit.losses.soft_nn import SoftNNLoss
from stealkit.losses.wasserstein import WassersteinLoss

AUGMENTED = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "batch_size": 64}
RELEASED = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 64}
VIEWS = {"augmented": ("aug2", "aug"), "released": ("clean", "clean")}  # (stolen view, target view)


class LossStealConfig(TrainConfig):
    """TrainConfig with a protocol preset: the protocol's values fill every setting not given."""

    protocol: Literal["augmented", "released"] = "augmented"
    presets: ClassVar[dict[str, dict]] = {"augmented": AUGMENTED, "released": RELEASED}

    @model_validator(mode="before")
    @classmethod
    def _apply_protocol(cls, data):
        if not isinstance(data, dict):
            return data
        proto = data.get("protocol", cls.model_fields["protocol"].default)
        return {**cls.presets.get(proto, {}), **data}

    def describe(self) -> str:
        return f"{self.protocol} protocol; {super().describe()}"


class LossStealAttack(QueryTrainAttack):
    """Base: subclasses set `Config` and `loss_class`; the loss's own settings are Config fields."""

    Config = LossStealConfig
    loss_class: type[StealLoss]

    def make_loss(self) -> StealLoss:
        stolen_view, target_view = VIEWS[self.config.protocol]
        own = {k: getattr(self.config, k) for k in self.loss_class.Config.model_fields}
        return self.loss_class(own, stolen_view=stolen_view, target_view=target_view)


@register_attack("steal-mse")
class StealMSE(LossStealAttack):
    """ICML'22 MSE between the stolen encoder's and the target's features."""

    loss_class = MSELoss


class InfoNCEConfig(LossStealConfig):
    temperature: float = Field(0.07, gt=0)
    presets: ClassVar[dict[str, dict]] = {"augmented": AUGMENTED, "released": {**RELEASED, "batch_size": 256, "lr": 3e-4}}


@register_attack("steal-infonce")
class StealInfoNCE(LossStealAttack):
    """ICML'22 InfoNCE: NT-Xent over [f_s; f_t], positives the same image's pair."""

    Config = InfoNCEConfig
    loss_class = InfoNCELoss


class SoftNNConfig(LossStealConfig):
    temperature: float = Field(100.0, gt=0)
    presets: ClassVar[dict[str, dict]] = {"augmented": AUGMENTED, "released": {**RELEASED, "batch_size": 256, "lr": 1e-3}}


@register_attack("steal-softnn")
class StealSoftNN(LossStealAttack):
    """ICML'22 Soft Nearest Neighbours over [f_s; f_t], labels = image identity."""

    Config = SoftNNConfig
    loss_class = SoftNNLoss


class WassersteinConfig(LossStealConfig):
    wasserstein_normalize: Literal["sum", "softmax"] = "sum"


@register_attack("steal-wasserstein")
class StealWasserstein(LossStealAttack):
    """ICML'22 Wasserstein: W1 between f_s and f_t read as distributions over coordinates."""

    Config = WassersteinConfig
    loss_class = WassersteinLoss
