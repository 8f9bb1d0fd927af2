"""Feature poisoning's solver (StolenEncoder, Liu, Jia, Liu, Gong, ACM CCS 2022, arXiv:2201.05889, Section VII-C,
Eq. 10) on hand-made 2-D cases: the default reading (the attacker's d as released, v not re-normalised, zero
start) against a hand-derived optimum and a brute-force search; the earlier reading reproduced exactly."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from stealkit.defences.poisoning import FeaturePoisoning
from stealkit.losses.distance import feature_distance

EPS = 0.5
FT = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, -1.0]])  # the victim's answers f_t(x), unit vectors
S_CLEAN = torch.tensor([[2.0, 1.0], [0.5, -1.0], [1.0, 1.0]])  # the shadow's f_s'(x)
S_AUG = torch.tensor([[1.0, 2.0], [-1.0, 0.3], [1.0, -1.0]])  # the shadow's f_s'(A(x))


class LinearShadow(torch.nn.Module):
    """A fixed linear shadow: s(x) = W · (mean R, G, B of x in [0, 1]). A flip keeps the channel means, so
    with A = flip, f_s'(A(x)) = f_s'(x)."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.register_buffer("w", w)
        self.spec = SimpleNamespace(input_size=8)

    def forward(self, x):
        x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
        return x.mean(dim=(2, 3)) @ self.w.T


def poisoning(**kw):
    shadow = LinearShadow(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, -1.0]]))
    kw = {"epsilon": EPS, "norm": "l2", "lam": 20.0, "normalize": True, "augment": "flip", "device": "cpu", **kw}
    return FeaturePoisoning(shadow, **kw)


def test_default_is_the_released_attackers_d_from_zero():
    d = poisoning()
    assert (d.normalize_answer, d.random_start) == (False, False)
    v = torch.tensor([[3.0, 4.0]])  # an answer of norm 5: d uses it as it is, and the shadow's feature normalised
    s = torch.tensor([[0.0, 2.0]])
    want = feature_distance(v, F.normalize(s, dim=1)) * (1 + d.lam)  # ‖v − unit(s)‖ = ‖(3, 3)‖
    assert d.objective(v, s, s).item() == pytest.approx(want.item()) == pytest.approx(21 * math.sqrt(18))


def test_full_path_matches_the_hand_derived_optimum():
    """With f_s'(A(x)) = f_s'(x), Eq. 10 is (1 + λ)·‖f_t + δ − unit(s)‖, a convex function of δ whose maximum
    over ‖δ‖₂ ≤ ε is δ* = ε·unit(f_t − unit(s)) (value ‖f_t − unit(s)‖ + ε)."""
    d = poisoning()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8, generator=g)
    s = d.shadow(images)
    expected = EPS * F.normalize(FT - F.normalize(s, dim=1), dim=1)
    out = d(FT, images=images)
    assert torch.allclose(out - FT, expected, atol=1e-5)
    assert torch.allclose((out - FT).norm(dim=1), torch.full((3,), EPS), atol=1e-5)
    assert (F.cosine_similarity(out, FT) > 0.8).all()  # pushed away from the shadow, not rotated away from f_t


def test_l2_solver_matches_a_brute_force_search_of_eq10():
    """λ = 20 and f_s'(A(x)) ≠ f_s'(x): the objective is convex in δ, so its maximum over the disc lies on the
    circle ‖δ‖ = ε; a 20,000-angle grid of it is the reference."""
    d = poisoning()
    delta = d.solve(FT, S_CLEAN, S_AUG)
    theta = torch.arange(20000) * (2 * math.pi / 20000)
    circle = EPS * torch.stack([theta.cos(), theta.sin()], 1)
    for i in range(len(FT)):
        grid = d.objective(FT[i] + circle, S_CLEAN[i].expand_as(circle), S_AUG[i].expand_as(circle))
        best = circle[grid.argmax()]
        got = d.objective(FT[i : i + 1] + delta[i : i + 1], S_CLEAN[i : i + 1], S_AUG[i : i + 1])
        assert got.item() >= grid.max().item() * (1 - 1e-5)
        assert (delta[i] - best).norm() < 0.01 * EPS
        assert delta[i].norm() <= EPS * (1 + 1e-6)


def test_linf_solver_reaches_the_best_vertex():
    """ℓ∞: a convex function is largest at a vertex of the box; in 2-D there are four to try."""
    d = poisoning(norm="linf", epsilon=0.1)
    delta = d.solve(FT, S_CLEAN, S_AUG)
    vertices = 0.1 * torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    for i in range(len(FT)):
        values = d.objective(FT[i] + vertices, S_CLEAN[i].expand(4, 2), S_AUG[i].expand(4, 2))
        assert torch.allclose(delta[i], vertices[values.argmax()], atol=1e-6)


def test_zero_start_is_deterministic_and_draws_nothing():
    d = poisoning()
    state = torch.get_rng_state()
    a = d.solve(FT, S_CLEAN, S_AUG)
    assert torch.equal(torch.get_rng_state(), state)  # no random draw in the solver
    torch.manual_seed(123)
    assert torch.equal(d.solve(FT, S_CLEAN, S_AUG), a)


def earlier_solver(d, features, s_clean, s_aug):
    """The solver as it was before the released reading became the default (written out here as the
    reference): d re-normalises both vectors, PGA from a uniform random point of the ball."""
    def objective(v):
        return sum(w * feature_distance(v, s, d.distance, True) for w, s in ((1.0, s_clean), (d.lam, s_aug)))

    def project(x):
        if d.norm == "linf":
            return x.clamp(-d.epsilon, d.epsilon)
        return x * (d.epsilon / x.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)

    ft = features.float()
    best, best_obj = torch.zeros_like(ft), objective(ft)
    delta = project(torch.empty_like(ft).uniform_(-d.epsilon, d.epsilon))
    for _ in range(d.steps):
        with torch.enable_grad():
            delta.requires_grad_(True)
            obj = objective(ft + delta)
            (grad,) = torch.autograd.grad(obj.sum(), delta)
        better = obj.detach() > best_obj
        best[better], best_obj[better] = delta.detach()[better], obj.detach()[better]
        step = grad.sign() if d.norm == "linf" else grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
        delta = project(delta.detach() + d.step_size * step)
    better = objective(ft + delta) > best_obj
    best[better] = delta[better]
    return best


@pytest.mark.parametrize("norm,eps", [("l2", 0.5), ("linf", 0.1)])
def test_the_earlier_reading_reproduces_its_output(norm, eps):
    d = poisoning(norm=norm, epsilon=eps, normalize_answer=True, random_start=True)
    torch.manual_seed(7)
    want = earlier_solver(d, FT, S_CLEAN, S_AUG)
    torch.manual_seed(7)
    assert torch.equal(d.solve(FT, S_CLEAN, S_AUG), want)
    # and the two readings are two different defences
    released = poisoning(norm=norm, epsilon=eps).solve(FT, S_CLEAN, S_AUG)
    assert not torch.allclose(released, want)


def test_shadow_defaults_to_the_paper_setting_and_cache_keys_see_the_solver():
    """The paper trains the shadow on the provider's own pre-training data with the attacker's settings: a
    shadow spec without `data` takes the victim's pre-training data; a checkpoint victim must name it. The
    row cache key holds the defence's resolved settings, so a changed solver default is a new key."""
    from stealkit.experiment.shadows import resolved_settings, shadow_data, shadow_problem
    from stealkit.experiment.validate import _defence_problem

    victim = {"pretrain": {"method": "simclr", "arch": "cnn_tiny", "data": {"name": "synthetic", "split": "train", "limit": 64}}}
    data = shadow_data({"victim": victim})
    assert (data.name, data.split, data.limit) == ("synthetic", "train", 64)
    assert shadow_data({"victim": victim, "data": {"name": "digits", "limit": 10}}).name == "digits"
    assert shadow_problem({"victim": victim}) is None
    assert "pre-training data" in shadow_problem({"victim": {"checkpoint": "runs/v"}})
    assert "pre-training data" in _defence_problem({"name": "poisoning", "epsilon": 1, "shadow": {"victim": {"checkpoint": "runs/v"}}})
    assert _defence_problem({"name": "poisoning", "epsilon": 1, "shadow": {"victim": victim}}) is None
    spec = {"name": "poisoning", "epsilon": 3, "shadow": {"victim": victim, "config": {"epochs": 2}}}
    got = resolved_settings(spec)
    assert got["shadow"] == spec["shadow"] and (got["normalize"], got["lam"]) == (True, 20.0)  # the attacker's
    assert (got["normalize_answer"], got["random_start"]) == (False, False)
    assert resolved_settings({**spec, "random_start": True}) != got and resolved_settings(None) is None
