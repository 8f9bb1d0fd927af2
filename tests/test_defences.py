"""Output defences of StolenEncoder (Liu et al., CCS 2022, arXiv:2201.05889, Section VII): top-k, rounding, noise, feature poisoning (Eq. 10)."""

from __future__ import annotations


import pytest
import torch

from stealkit.defences.base import DEFENCES, build_defence
from stealkit.defences.noise import GaussianNoise
from stealkit.defences.poisoning import FeaturePoisoning
from stealkit.experiment.shadows import resolve_defence, train_shadow
from stealkit.defences.rounding import Rounding
from stealkit.defences.topk import TopK
from stealkit.models.checkpoint import save_encoder
from stealkit.models.encoder import build_encoder, embed
from stealkit.targets.local import LocalTarget


def feats(n=16, d=64, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def shadow():
    torch.manual_seed(1)
    return build_encoder("shufflenet_v2").eval()


@pytest.fixture(scope="module")
def images():
    return torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))


def test_registry_has_all_four():
    assert {"topk", "rounding", "noise", "poisoning"} <= set(DEFENCES)
    assert isinstance(build_defence({"name": "topk", "k": 3}), TopK)
    assert isinstance(build_defence({"name": "rounding", "m": 1}), Rounding)
    assert isinstance(build_defence({"name": "noise", "sigma": 0.1, "seed": 0}), GaussianNoise)


@pytest.mark.parametrize("k", [1, 5, 10, 63])
def test_topk_keeps_exactly_k_largest_magnitudes(k):
    f = feats()
    out = TopK(k)(f)
    assert ((out != 0).sum(1) == k).all()
    kept = out != 0
    assert torch.equal(out[kept], f[kept])  # kept entries unchanged
    # every kept |value| >= every zeroed |value| in the same row
    for row, mask in zip(f.abs(), kept):
        assert row[mask].min() >= row[~mask].max()


def test_topk_k_at_least_dim_is_identity():
    f = feats()
    assert torch.equal(TopK(64)(f), f) and torch.equal(TopK(100)(f), f)
    with pytest.raises(ValueError):
        TopK(0)


@pytest.mark.parametrize("m", [0, 1, 2, 3])
def test_rounding_to_m_decimals(m):
    f = feats() * 3
    out = Rounding(m)(f)
    assert torch.equal(out, torch.round(out, decimals=m))  # idempotent: already m decimals
    assert (out - f).abs().max() <= 0.5 * 10**-m + 1e-6
    scaled = out.double() * 10**m
    assert (scaled - scaled.round()).abs().max() < 1e-3  # an integer number of 10^-m
    assert Rounding(2)(torch.tensor([[0.0123, -0.0167]]))[0].tolist() == pytest.approx([0.01, -0.02])


def test_noise_has_sigma_and_is_seeded():
    f = torch.zeros(200, 100)
    a, b = GaussianNoise(0.3, seed=7)(f), GaussianNoise(0.3, seed=7)(f)
    assert torch.equal(a, b)
    assert a.std().item() == pytest.approx(0.3, rel=0.05) and abs(a.mean().item()) < 0.01


@pytest.mark.parametrize("norm,eps", [("l2", 1.0), ("l2", 0.05), ("linf", 0.01), ("linf", 0.1)])
def test_poisoning_respects_bound_and_raises_shadow_loss(shadow, images, norm, eps):
    torch.manual_seed(0)
    d = FeaturePoisoning(shadow, epsilon=eps, norm=norm, steps=8)
    ft = torch.randn(len(images), shadow.feature_dim) * 0.1
    s_clean, s_aug = d.shadow_features(images)
    delta = d.solve(ft, s_clean, s_aug)
    size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)
    assert (size <= eps * (1 + 1e-5)).all()
    before, after = d.objective(ft, s_clean, s_aug), d.objective(ft + delta, s_clean, s_aug)
    assert (after > before).all(), (before, after)
    assert (size > 0.5 * eps).all()  # the maximiser sits on the boundary of the ball
    out = d(ft, images=images)  # the full path (fresh A(x) draw) keeps the bound too
    size = (out - ft).norm(dim=1) if norm == "l2" else (out - ft).abs().amax(dim=1)
    assert (size <= eps * (1 + 1e-5)).all()


def test_poisoning_eps_zero_is_identity_and_needs_images(shadow, images):
    ft = torch.randn(len(images), shadow.feature_dim)
    assert torch.equal(FeaturePoisoning(shadow, 0.0)(ft, images=images), ft)
    with pytest.raises(ValueError, match="images"):
        FeaturePoisoning(shadow, 1.0)(ft)
    with pytest.raises(ValueError, match="norm"):
        FeaturePoisoning(shadow, 1.0, norm="l3")


def test_poisoning_from_checkpoint_via_registry(shadow, images, tmp_path):
    path = save_encoder(shadow, tmp_path / "shadow")
    d = build_defence({"name": "poisoning", "shadow": str(path), "epsilon": 0.5, "norm": "inf", "steps": 3})
    assert d.norm == "linf"
    ft = torch.randn(len(images), shadow.feature_dim)
    assert ((d(ft, images=images) - ft).abs().amax(1) <= 0.5 + 1e-6).all()


def test_train_shadow_uses_stolen_encoder_trainer(monkeypatch, shadow, images):
    seen = {}

    def fake_train(imgs, target_features, config, device=None, progress=True):
        seen.update(n=len(imgs), dim=target_features.shape[1], epochs=config.epochs)
        return shadow, [{"epoch": 1}]

    import stealkit.attacks.trainer as trainer

    monkeypatch.setattr(trainer, "train_stolen_encoder", fake_train)
    victim = build_encoder("shufflenet_v2").eval()
    assert train_shadow(victim, images, {"epochs": 1}) is shadow
    assert seen == {"n": len(images), "dim": victim.feature_dim, "epochs": 1}


def test_a_shadow_spec_is_resolved_by_the_experiment_layer(monkeypatch, shadow, images, tmp_path):
    """The defence only takes an encoder or a checkpoint path; the experiment layer trains a spec's shadow
    once and hands the defence the path plus the attacker's d, λ and A."""
    import stealkit.experiment.shadows as shadows

    monkeypatch.setenv("STEALKIT_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_checkpoint(spec, device=None, progress=False):
        calls.append(spec)
        return str(save_encoder(shadow, tmp_path / "shadow"))

    monkeypatch.setattr(shadows, "shadow_checkpoint", fake_checkpoint)
    spec = {"name": "poisoning", "epsilon": 1.0, "norm": "l2",
            "shadow": {"victim": {"checkpoint": "x"}, "data": {"name": "synthetic"}, "config": {"lam": 5.0, "distance": "l1", "augment": "flip"}}}
    with pytest.raises(ValueError, match="resolve it first"):
        build_defence(spec)
    resolved = resolve_defence(spec)
    assert calls and isinstance(resolved["shadow"], str)
    d = build_defence(resolved)
    assert (d.lam, d.distance, d.augment.names, d.normalize) == (5.0, "l1", ("flip",), True)


def test_same_defence_objects_work_on_local_target(shadow, images):
    enc = build_encoder("shufflenet_v2").eval()
    raw = embed(enc, images)
    for defence in (TopK(5), Rounding(3), GaussianNoise(0.1, seed=0), FeaturePoisoning(shadow, 0.2, "linf", steps=2)):
        out = LocalTarget(enc, defence=defence).embed(images)
        assert out.shape == raw.shape and out.dtype == torch.float32
    assert torch.equal(LocalTarget(enc, defence=TopK(5)).embed(images), TopK(5)(raw))
