"""Pre-training losses: SimCLR's NT-Xent and MoCo's InfoNCE with a queue.

- NT-Xent: Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
  Representations", ICML 2020 (arXiv:2002.05709), Eq. (1).
- MoCo v2: He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation
  Learning", CVPR 2020 (arXiv:1911.05722); Chen, Fan, Girshick, He, arXiv:2003.04297.
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
