"""Stealing with the ICML 2022 losses (Dziedzic et al., "On the Difficulty of Defending
Self-Supervised Learning against Model Extraction"; seed 002): MSE, InfoNCE, Soft Nearest
Neighbours, Wasserstein — one registered attack per loss: "steal-mse", "steal-infonce",
"steal-softnn", "steal-wasserstein".

Protocol (seed 002: "we query the victim encoder with the first augmentation and our stolen copy
with the second"): query the target once per surrogate image (|D| queries, answers cached in
`workdir/queries.safetensors`), then train a fresh f_s on
    L = clean_weight · ℓ(f_s(x), f_t(x)) + lam · ℓ(f_s(A(x)), f_t(x))
with ℓ the attack's loss, a fresh A(x) (flip+jitter+gray by default) every epoch, through
`train_stolen_encoder`'s fast, resumable loop. Defaults: lam=1, clean_weight=0 (only the augmented
view, as in the paper); the rest as StolenEncoder (ResNet34, Adam 1e-3, batch 64, 100 epochs).
`distance`, `normalize` and `reduction` of StealConfig are Eq. (7)'s and are not used here.
Shapes: surrogate uint8 N×3×H×W, answers N×D, stolen encoder N×3×H×W -> N×D.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch

from stealkit.attacks.base import register_attack
from stealkit.attacks.stolen_encoder import StealConfig, StolenEncoder
from stealkit.losses_stealing import infonce_loss, mse_loss, soft_nn_loss, wasserstein_loss

class LossStealConfig(StealConfig):
    lam: float = 1.0  # weight of ℓ(f_s(A(x)), f_t(x)); 0 trains on clean images only
    clean_weight: float = 0.0  # weight of ℓ(f_s(x), f_t(x))

def make_loss_fn(pair_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], lam: float, clean_weight: float):
    """`train_stolen_encoder` hook: (target, stolen_clean, stolen_aug, target_aug) -> (L, L1, L2).

    L1 = ℓ(f_s(x), f_t(x)) (computed only when weighted or when there is no augmented view),
    L2 = ℓ(f_s(A(x)), f_t(x)) (f_t(A(x)) instead when query_aug provides it), L = clean_weight·L1 + lam·L2;
    without an augmented view (lam = 0) L = L1.
    """

    def loss_fn(t, fc, fa, ta):
        zero = torch.zeros((), device=t.device)
        if fa is None:
            l1 = pair_loss(fc, t)
            return l1, l1, zero
        l2 = pair_loss(fa, t if ta is None else ta)
        l1 = pair_loss(fc, t) if clean_weight > 0 else zero
        return clean_weight * l1 + lam * l2, l1, l2

    return loss_fn

class LossStealAttack(StolenEncoder):
    """Base: subclasses set `Config` and implement `pair_loss(stolen, target) -> scalar`; querying (exactly
    |D| queries, none on a cached rerun), caching and training are StolenEncoder's."""

    Config = LossStealConfig

    def pair_loss(self, stolen: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss_fn(self):
        return make_loss_fn(self.pair_loss, self.config.lam, self.config.clean_weight)

@register_attack("steal-mse")
class StealMSE(LossStealAttack):
    """ICML'22 MSE: mean squared error between f_s(A(x)) and f_t(x)."""

    def pair_loss(self, stolen, target):
        return mse_loss(stolen, target)

class InfoNCEConfig(LossStealConfig):
    temperature: float = 0.07

@register_attack("steal-infonce")
class StealInfoNCE(LossStealAttack):
    """ICML'22 InfoNCE: NT-Xent over [f_s(A(x)); f_t(x)], positives the same image's pair."""

    Config = InfoNCEConfig

    def pair_loss(self, stolen, target):
        return infonce_loss(stolen, target, self.config.temperature)

class SoftNNConfig(LossStealConfig):
    temperature: float = 100.0

@register_attack("steal-softnn")
class StealSoftNN(LossStealAttack):
    """ICML'22 Soft Nearest Neighbours over [f_s(A(x)); f_t(x)], labels = image identity."""

    Config = SoftNNConfig

    def pair_loss(self, stolen, target):
        return soft_nn_loss(stolen, target, self.config.temperature)

class WassersteinConfig(LossStealConfig):
    wasserstein_normalize: Literal["sum", "softmax"] = "sum"

@register_attack("steal-wasserstein")
class StealWasserstein(LossStealAttack):
    """ICML'22 Wasserstein: W1 between f_s(A(x)) and f_t(x) read as distributions over coordinates."""

    Config = WassersteinConfig

    def pair_loss(self, stolen, target):
        return wasserstein_loss(stolen, target, self.config.wasserstein_normalize)
