"""Losses: SimCLR's NT-Xent, MoCo's InfoNCE with a queue, and StolenEncoder's feature distances.

References
- NT-Xent: Chen et al., "A Simple Framework for Contrastive Learning", ICML 2020, Eq. (1).
- MoCo v2: He et al., CVPR 2020 / Chen et al. 2020, InfoNCE over one positive and a queue of negatives.
- StolenEncoder: Liu et al., CCS 2022 (seed 004), Eq. (3), (6), (7): L = L1 + λ·L2 with distance d.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent over 2N views. z1, z2: N×D projections of two views of the same N images -> scalar.

    For each of the 2N views the positive is the other view of its image; the 2N−2 views of
    other images are negatives; self-similarity is excluded. Mean over the 2N anchors.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.t() / temperature
    sim.fill_diagonal_(float("-inf"))
    targets = torch.arange(2 * n, device=z.device).roll(n)  # view i pairs with view i±n
    return F.cross_entropy(sim, targets)


def moco_infonce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """MoCo InfoNCE. q: N×D queries, k: N×D keys (positives, no grad), queue: K×D negatives -> scalar.

    logits = [q·k, q·queue] / T with L2-normalised vectors; the positive is column 0.
    """
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.float(), dim=1)
    queue = F.normalize(queue.float(), dim=1)
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ queue.t()
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


DISTANCES = ("l2", "l1", "cosine")


def feature_distance(a: torch.Tensor, b: torch.Tensor, kind: str = "l2", normalize: bool = False) -> torch.Tensor:
    """Per-sample distance d(a_i, b_i) for a, b: N×D -> N.

    l2: ‖a−b‖₂ (not squared, as in Eq. (3) and the released code); l1: ‖a−b‖₁;
    cosine: 1 − cos(a, b). `normalize` L2-normalises both vectors first (the released code does).
    """
    a, b = a.float(), b.float()
    if normalize:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    if kind == "l2":
        return (a - b).pow(2).sum(dim=1).clamp_min(1e-12).sqrt()
    if kind == "l1":
        return (a - b).abs().sum(dim=1)
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(a, b, dim=1)
    raise ValueError(f"unknown distance {kind!r}; choose from {DISTANCES}")


def stolen_encoder_loss(
    target: torch.Tensor,
    stolen_clean: torch.Tensor,
    stolen_aug: torch.Tensor | None,
    lam: float = 20.0,
    distance: str = "l2",
    normalize: bool = False,
    reduction: str = "mean",
    target_aug: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """StolenEncoder Eq. (7) on a mini-batch -> (L, L1, L2).

    target: N×D answers f_t(x) from the API; stolen_clean: f_s(x); stolen_aug: f_s(A(x)) (None when λ=0).
    L1 = agg d(f_t(x), f_s(x)), L2 = agg d(f_t(x), f_s(A(x))), L = L1 + λ·L2,
    agg = mean over the batch (paper, Algorithm 1) or sum (the authors' released code).
    With `target_aug` = f_t(A(x)) queried from the API, L2 becomes Eq. (4)'s L2' (query-aug variant).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    agg = torch.mean if reduction == "mean" else torch.sum
    l1 = agg(feature_distance(target, stolen_clean, distance, normalize))
    if stolen_aug is None or lam == 0:
        l2 = torch.zeros((), device=l1.device)
    else:
        ref = target if target_aug is None else target_aug
        l2 = agg(feature_distance(ref, stolen_aug, distance, normalize))
    return l1 + lam * l2, l1, l2
