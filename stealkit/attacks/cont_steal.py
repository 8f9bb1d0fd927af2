"""Cont-Steal (Sha, He, Yu, Backes, Zhang, "Can't Steal? Cont-Steal! Contrastive Stealing Attacks
Against Image Encoders", CVPR 2023; seed 003), registered as "cont-steal".

Query the target once per surrogate image (|D| queries, cached), then train a fresh f_s with the
contrastive loss of `stealkit.losses_stealing.cont_steal_loss`: for image i of a batch the anchor is
f_s(A(x_i)), the positive f_t(x_i), the negatives f_t(x_j), j ≠ i (optionally also f_s(A(x_k)), k ≠ i:
`stolen_negatives`); cosine similarities over a temperature τ (default 0.1; the seed gives no value).
A is a fresh flip+jitter+gray draw per image per epoch. Training reuses `train_stolen_encoder`
(resumable, GPU-resident). Other defaults as StolenEncoder: ResNet34, Adam lr 1e-3, batch 64, 100 epochs
(a contrastive loss sees only batch−1 negatives: larger batches help).
This is the issue's |D|-query form. The end-to-end form that later work describes (the target asked
for the augmented view of every image every epoch, positive f_t(A(x))) is `query_aug: true`, billed
(e+1)·|D| queries as for StolenEncoder-query-aug; `stolen_negatives: true` adds the surrogate-side negatives.
Shapes: surrogate uint8 N×3×H×W, answers N×D, stolen encoder N×3×H×W -> N×D.
"""

from __future__ import annotations

from stealkit.attacks.base import register_attack
from stealkit.attacks.loss_steal import LossStealAttack, LossStealConfig
from stealkit.losses_stealing import cont_steal_loss


class ContStealConfig(LossStealConfig):
    temperature: float = 0.1
    stolen_negatives: bool = False


@register_attack("cont-steal")
class ContSteal(LossStealAttack):
    """Cont-Steal: InfoNCE between f_s(A(x)) and f_t(x); exactly |D| queries."""

    Config = ContStealConfig

    def pair_loss(self, stolen, target):
        return cont_steal_loss(stolen, target, self.config.temperature, self.config.stolen_negatives)
