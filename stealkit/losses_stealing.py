"""Losses for stealing an encoder from its answers: the ICML 2022 losses and Cont-Steal's InfoNCE.

Every function takes `stolen` = f_s(·) of the attacker's encoder and `target` = f_t(x) returned by
the API, both float N×D (row i of both belongs to image i), and returns a scalar (mean over the batch).

References
- Dziedzic, Dhawan, Kaleem, Guan, Papernot, "On the Difficulty of Defending Self-Supervised
  Learning against Model Extraction", ICML 2022 (seed 002, the blog post; released code
  cleverhans-lab/ssl-attacks-defenses, `loss.py` and `steal.py`): MSE, InfoNCE, Soft Nearest
  Neighbours, Wasserstein. Their InfoNCE and SoftNN treat the 2N vectors [stolen; target] as one
  batch of two "views", so the positive of stolen_i is target_i and vice versa.
- Sha, He, Yu, Backes, Zhang, "Can't Steal? Cont-Steal! Contrastive Stealing Attacks Against
  Image Encoders", CVPR 2023 (seed 003): anchor f_s(A(x_i)), positive f_t(x_i), negatives the
  target embeddings f_t(x_j), j ≠ i, of the other images in the batch.
- Frosst, Papernot, Hinton, "Analyzing and Improving Representations with the Soft Nearest
  Neighbor Loss", ICML 2019 (the SoftNN loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(stolen: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if stolen.ndim != 2 or stolen.shape != target.shape:
        raise ValueError(f"stolen and target must both be N×D, got {tuple(stolen.shape)} and {tuple(target.shape)}")
    return stolen.float(), target.float().detach()


def mse_loss(stolen: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ICML'22 "MSE": mean over all N·D entries of (f_s − f_t)² (torch.nn.MSELoss). N×D, N×D -> scalar."""
    s, t = _check(stolen, target)
    return (s - t).pow(2).mean()


def infonce_loss(stolen: torch.Tensor, target: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """ICML'22 "InfoNCE" (SimCLR's NT-Xent over the 2N vectors z = [stolen; target]). N×D, N×D -> scalar.

    With z L2-normalised and s_ab = z_a·z_b / τ, for each of the 2N anchors a with positive p(a)
    (stolen_i <-> target_i):  ℓ_a = −log( exp(s_a,p(a)) / Σ_{b≠a} exp(s_ab) );  loss = mean_a ℓ_a.
    Negatives are the other images' stolen *and* target vectors. τ = 0.07 is the released code's default.
    """
    s, t = _check(stolen, target)
    n = s.shape[0]
    z = F.normalize(torch.cat([s, t]), dim=1)
    sim = (z @ z.t()) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.arange(2 * n, device=z.device).roll(n)  # stolen_i <-> target_i (built on device: CUDA-graph safe)
    return F.cross_entropy(sim, positives)


def soft_nn_loss(stolen: torch.Tensor, target: torch.Tensor, temperature: float = 100.0) -> torch.Tensor:
    """ICML'22 "SoftNN": Soft Nearest Neighbours loss (Frosst et al. 2019) on z = [stolen; target]. -> scalar.

    Labels: z_a and z_b share a label iff they come from the same image (stolen_i, target_i).
    With d_ab = ‖z_a − z_b‖² (squared Euclidean, not normalised) and T the temperature:
        ℓ_a = −log( Σ_{b≠a, same label} exp(−d_ab/T) / Σ_{b≠a} exp(−d_ab/T) ),  loss = mean_a ℓ_a.
    Computed in log space (logsumexp); the released code evaluates log(1e-9 + ratio) instead, which
    differs only where the ratio is below ~1e-7. T = 100 is the released code's default.
    """
    s, t = _check(stolen, target)
    n = s.shape[0]
    z = torch.cat([s, t]).double()
    d = torch.cdist(z, z).pow(2)
    logits = (-d / temperature).masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.arange(2 * n, device=z.device).roll(n)  # stolen_i <-> target_i (built on device: CUDA-graph safe)
    log_ratio = logits.gather(1, positives[:, None]).squeeze(1) - torch.logsumexp(logits, dim=1)
    return (-log_ratio.mean()).float()


def wasserstein_loss(stolen: torch.Tensor, target: torch.Tensor, normalize: str = "sum") -> torch.Tensor:
    """ICML'22 "Wasserstein": first Wasserstein distance between each pair (f_s(x_i), f_t(x_i)) read as
    1-D distributions over the D coordinates, averaged over the batch. N×D, N×D -> scalar.

    normalize="sum" (released code): p = v / (Σ_d v_d + 1e-14), meant for non-negative features
    (post-ReLU pooling, as ResNet/CNN encoders here return); "softmax": p = softmax(v), for signed features.
    W1(p, q) = Σ_d | CDF_p(d) − CDF_q(d) |, CDF = cumulative sum over the coordinates.
    """
    s, t = _check(stolen, target)
    if normalize == "sum":
        p = s / (s.sum(dim=1, keepdim=True) + 1e-14)
        q = t / (t.sum(dim=1, keepdim=True) + 1e-14)
    elif normalize == "softmax":
        p, q = F.softmax(s, dim=1), F.softmax(t, dim=1)
    else:
        raise ValueError(f"normalize must be 'sum' or 'softmax', got {normalize!r}")
    return (p.cumsum(dim=1) - q.cumsum(dim=1)).abs().sum(dim=1).mean()


def cont_steal_loss(
    stolen_aug: torch.Tensor,
    target: torch.Tensor,
    temperature: float = 0.1,
    stolen_negatives: bool = False,
) -> torch.Tensor:
    """Cont-Steal InfoNCE (Sha et al., CVPR 2023). stolen_aug: f_s(A(x)) N×D, target: f_t(x) N×D -> scalar.

    With u_i = f_s(A(x_i))/‖·‖, v_j = f_t(x_j)/‖·‖ and τ the temperature:
        ℓ_i = −log( exp(u_i·v_i/τ) / Σ_j exp(u_i·v_j/τ) ),  loss = mean_i ℓ_i,
    i.e. the positive is the target's embedding of the same image and the negatives are the target's
    embeddings of the other images in the batch (the sum runs over all j, positive included).
    stolen_negatives=True also puts the other images' stolen embeddings u_k (k ≠ i) in the denominator.
    """
    s, t = _check(stolen_aug, target)
    u, v = F.normalize(s, dim=1), F.normalize(t, dim=1)
    logits = u @ v.t() / temperature
    if stolen_negatives:
        n = u.shape[0]
        uu = (u @ u.t() / temperature).masked_fill(torch.eye(n, dtype=torch.bool, device=u.device), float("-inf"))
        logits = torch.cat([logits, uu], dim=1)
    return F.cross_entropy(logits, torch.arange(u.shape[0], device=u.device))


STEALING_LOSSES = {
    "mse": mse_loss,
    "infonce": infonce_loss,
    "softnn": soft_nn_loss,
    "wasserstein": wasserstein_loss,
    "cont-steal": cont_steal_loss,
}
