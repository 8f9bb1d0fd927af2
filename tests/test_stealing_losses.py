"""Stealing losses against hand-written references (explicit loops in numpy, float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stealkit.losses import cont_steal_loss, infonce_loss, mse_loss, soft_nn_loss, wasserstein_loss

pytestmark = pytest.mark.precision  # CI runs these a second time with STEALKIT_BF16=on


def _batch(n=4, d=5, seed=0, positive=False):
    rng = np.random.default_rng(seed)
    s, t = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    if positive:
        s, t = np.abs(s), np.abs(t)
    return s, t


def _t(a):
    return torch.tensor(a, dtype=torch.float32)


def _unit(v):
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def test_mse_matches_loop():
    s, t = _batch()
    ref = sum((s[i, k] - t[i, k]) ** 2 for i in range(4) for k in range(5)) / 20
    assert mse_loss(_t(s), _t(t)).item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("tau", [0.07, 0.5, 1.0])
def test_infonce_matches_loop(tau):
    s, t = _batch(seed=1)
    n = len(s)
    z = [_unit(list(v)) for v in np.concatenate([s, t])]
    total = 0.0
    for a in range(2 * n):
        pos = a + n if a < n else a - n
        sims = {b: sum(x * y for x, y in zip(z[a], z[b])) / tau for b in range(2 * n) if b != a}
        total += -(sims[pos] - math.log(sum(math.exp(v) for v in sims.values())))
    assert infonce_loss(_t(s), _t(t), tau).item() == pytest.approx(total / (2 * n), rel=1e-4)


@pytest.mark.parametrize("temp", [1.0, 10.0, 100.0])
def test_soft_nn_matches_loop(temp):
    s, t = _batch(seed=2)
    n = len(s)
    z = np.concatenate([s, t])
    total = 0.0
    for a in range(2 * n):
        num = den = 0.0
        for b in range(2 * n):
            if b == a:
                continue
            e = math.exp(-sum((z[a, k] - z[b, k]) ** 2 for k in range(z.shape[1])) / temp)
            den += e
            if b % n == a % n:
                num += e
        total += -math.log(num / den)
    assert soft_nn_loss(_t(s), _t(t), temp).item() == pytest.approx(total / (2 * n), rel=1e-4)


def test_wasserstein_matches_loop():
    s, t = _batch(seed=3, positive=True)
    total = 0.0
    for i in range(len(s)):
        p, q = s[i] / s[i].sum(), t[i] / t[i].sum()
        cp = cq = 0.0
        for k in range(len(p)):
            cp += p[k]
            cq += q[k]
            total += abs(cp - cq)
    assert wasserstein_loss(_t(s), _t(t)).item() == pytest.approx(total / len(s), rel=1e-4)


def test_wasserstein_softmax_and_zero_at_equality():
    s, t = _batch(seed=4)
    assert wasserstein_loss(_t(s), _t(s), "softmax").item() == pytest.approx(0.0, abs=1e-6)
    p = np.exp(s[0]) / np.exp(s[0]).sum()
    q = np.exp(t[0]) / np.exp(t[0]).sum()
    ref = np.abs(np.cumsum(p) - np.cumsum(q)).sum()
    assert wasserstein_loss(_t(s[:1]), _t(t[:1]), "softmax").item() == pytest.approx(ref, rel=1e-4)
    with pytest.raises(ValueError):
        wasserstein_loss(_t(s), _t(t), "bogus")


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_cont_steal_matches_loop(tau):
    s, t = _batch(n=5, d=3, seed=5)
    n = len(s)
    u = [_unit(list(v)) for v in s]
    v = [_unit(list(w)) for w in t]
    total = 0.0
    for i in range(n):
        logits = [sum(a * b for a, b in zip(u[i], v[j])) / tau for j in range(n)]
        total += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
    assert cont_steal_loss(_t(s), _t(t), tau).item() == pytest.approx(total / n, rel=1e-4)


def test_cont_steal_with_stolen_negatives_matches_loop():
    tau = 0.2
    s, t = _batch(n=4, d=3, seed=6)
    n = len(s)
    u = [_unit(list(v)) for v in s]
    v = [_unit(list(w)) for w in t]
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    total = 0.0
    for i in range(n):
        den = sum(math.exp(dot(u[i], v[j]) / tau) for j in range(n))
        den += sum(math.exp(dot(u[i], u[k]) / tau) for k in range(n) if k != i)
        total += -(dot(u[i], v[i]) / tau - math.log(den))
    assert cont_steal_loss(_t(s), _t(t), tau, stolen_negatives=True).item() == pytest.approx(total / n, rel=1e-4)


def test_losses_have_gradients_only_for_stolen_and_reject_bad_shapes():
    s, t = _batch()
    for fn in (mse_loss, infonce_loss, soft_nn_loss, cont_steal_loss):
        stolen = _t(s).requires_grad_(True)
        target = _t(t).requires_grad_(True)
        fn(stolen, target).backward()
        assert stolen.grad is not None and torch.isfinite(stolen.grad).all()
        assert target.grad is None
    with pytest.raises(ValueError):
        mse_loss(torch.zeros(3, 4), torch.zeros(3, 5))


def test_perfect_copy_beats_random_for_contrastive_losses():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(16, 8, generator=g)
    rand = torch.randn(16, 8, generator=g)
    assert cont_steal_loss(t, t, 0.1) < cont_steal_loss(rand, t, 0.1)
    assert infonce_loss(t, t, 0.1) < infonce_loss(rand, t, 0.1)
    assert soft_nn_loss(t, t, 1.0) < soft_nn_loss(rand, t, 1.0)
