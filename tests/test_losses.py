"""Losses against hand-written loop computations (independent of the vectorised code)."""

import math

import pytest
import torch

from stealkit.losses import feature_distance, moco_infonce, nt_xent, stolen_encoder_loss

pytestmark = pytest.mark.precision  # CI runs these a second time with STEALKIT_BF16=on


def _cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def nt_xent_reference(z1, z2, t):
    views = list(z1) + list(z2)
    n = len(z1)
    total = 0.0
    for i, zi in enumerate(views):
        j = i + n if i < n else i - n
        denom = sum(math.exp(_cos(zi, zk) / t) for k, zk in enumerate(views) if k != i)
        total += -math.log(math.exp(_cos(zi, views[j]) / t) / denom)
    return total / (2 * n)


def test_nt_xent_matches_loop():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    for t in (0.1, 0.5, 1.0):
        assert nt_xent(z1, z2, t).item() == pytest.approx(nt_xent_reference(z1.double(), z2.double(), t), rel=1e-5)


def test_nt_xent_hand_computed_two_pairs():
    # Two images, 2-d unit vectors: e1, e2 and their identical second views. T = 1.
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = z1.clone()
    # anchor e1: positive cos 1, negatives e2 (cos 0) and e2' (cos 0): -log(e / (e + 2))
    expected = -math.log(math.e / (math.e + 2))
    assert nt_xent(z1, z2, 1.0).item() == pytest.approx(expected, rel=1e-6)


def test_moco_infonce_matches_loop():
    g = torch.Generator().manual_seed(1)
    q, k, queue = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g), torch.randn(9, 6, generator=g)
    t = 0.2
    ref = 0.0
    for i in range(4):
        pos = math.exp(_cos(q[i], k[i]) / t)
        neg = sum(math.exp(_cos(q[i], queue[j]) / t) for j in range(9))
        ref += -math.log(pos / (pos + neg))
    assert moco_infonce(q, k, queue, t).item() == pytest.approx(ref / 4, rel=1e-5)


def test_distances_hand_computed():
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[3.0, 4.0], [1.0, -1.0]])
    assert feature_distance(a, b, "l2").tolist() == pytest.approx([5.0, 2.0])
    assert feature_distance(a, b, "l1").tolist() == pytest.approx([7.0, 2.0])
    # cosine: first row has a zero vector -> cos 0 -> distance 1; second: orthogonal -> 1
    assert feature_distance(a[1:], b[1:], "cosine").tolist() == pytest.approx([1.0])
    # normalised l2 between unit (1,1)/√2 and (1,-1)/√2 = √2
    assert feature_distance(a[1:], b[1:], "l2", normalize=True).item() == pytest.approx(math.sqrt(2), rel=1e-6)
    with pytest.raises(ValueError, match="unknown distance"):
        feature_distance(a, b, "l3")


def test_stolen_encoder_loss_hand_computed_batch():
    t = torch.tensor([[0.0, 0.0], [1.0, 0.0]])  # API answers f_t(x)
    fc = torch.tensor([[3.0, 4.0], [1.0, 0.0]])  # f_s(x): distances 5, 0
    fa = torch.tensor([[0.0, 1.0], [1.0, 2.0]])  # f_s(A(x)): distances 1, 2
    loss, l1, l2 = stolen_encoder_loss(t, fc, fa, lam=20.0)
    assert (l1.item(), l2.item()) == pytest.approx((2.5, 1.5))
    assert loss.item() == pytest.approx(2.5 + 20 * 1.5)
    loss_sum, l1s, l2s = stolen_encoder_loss(t, fc, fa, lam=2.0, reduction="sum")
    assert (l1s.item(), l2s.item(), loss_sum.item()) == pytest.approx((5.0, 3.0, 11.0))
    loss0, _, l20 = stolen_encoder_loss(t, fc, None, lam=0.0)
    assert loss0.item() == pytest.approx(2.5) and l20.item() == 0.0
    # query-aug (Eq. 4): L2' compares f_s(A(x)) with the queried f_t(A(x))
    ta = torch.tensor([[0.0, 1.0], [1.0, 2.0]])
    _, _, l2q = stolen_encoder_loss(t, fc, fa, target_aug=ta)
    assert l2q.item() == pytest.approx(0.0, abs=1e-5)
