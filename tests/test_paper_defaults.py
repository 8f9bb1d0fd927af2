"""The papers' own defaults (StolenEncoder: Liu et al., CCS 2022, arXiv:2201.05889; its released code)
and the API's normalised answers. Each test fails on the defaults stealkit had before."""

from __future__ import annotations

import math

import pytest
import torch

from stealkit.attacks import build_attack
from stealkit.data.imageset import ImageSet
from stealkit.defences import build_defence
from stealkit.losses import stolen_encoder_loss
from stealkit.models.encoder import build_encoder, embed
from stealkit.targets import LocalTarget

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.precision]


def _set(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.zeros(n), ["x"], "rand")


def test_stolenencoder_trains_with_the_released_sgd(tmp_path):
    """SGD (the paper's "standard SGD"), lr 1e-3, momentum 0.9, weight decay 5e-4 (released code): the saved
    optimizer state is SGD's (a momentum buffer per parameter, no Adam moments)."""
    torch.manual_seed(0)
    victim = build_encoder("cnn_tiny").eval()
    attack = build_attack("stolenencoder", {"arch": "cnn_tiny", "epochs": 1, "batch_size": 32, "augment": "flip"})
    attack.steal(LocalTarget(victim), _set(), device="cpu", workdir=tmp_path, progress=False)
    opt = torch.load(tmp_path / "train_state.pt", weights_only=True)["optimizer"]
    group = opt["param_groups"][0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (1e-3, 0.9, 5e-4)
    assert "betas" not in group
    assert all(set(s) == {"momentum_buffer"} for s in opt["state"].values())


def test_stolenencoder_loss_defaults_are_normalised_l2_summed():
    cfg = build_attack("stolenencoder").config
    assert (cfg.normalize, cfg.reduction, cfg.lam, cfg.distance, cfg.batch_size, cfg.epochs, cfg.arch) == (
        True, "sum", 20.0, "l2", 64, 100, "resnet34")
    loss = build_attack("stolenencoder").make_loss()
    g = torch.Generator().manual_seed(1)
    t, fc, fa = (torch.randn(5, 7, generator=g) * 3 for _ in range(3))
    total, l1, l2 = loss({"clean": fc, "aug": fa}, {"clean": t})

    def unit(v):
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]

    def dist(a, b):
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(unit(a), unit(b))))

    ref1 = sum(dist(t[i].tolist(), fc[i].tolist()) for i in range(5))  # summed over the batch, not averaged
    ref2 = sum(dist(t[i].tolist(), fa[i].tolist()) for i in range(5))
    assert l1.item() == pytest.approx(ref1, rel=1e-5) and l2.item() == pytest.approx(ref2, rel=1e-5)
    assert total.item() == pytest.approx(ref1 + 20 * ref2, rel=1e-5)
    # Algorithm 1's text (mean) stays available
    _, m1, _ = stolen_encoder_loss(t, fc, fa, 20, "l2", True, "mean")
    assert m1.item() == pytest.approx(ref1 / 5, rel=1e-5)


def test_adam_is_an_option_not_the_default():
    assert build_attack("stolenencoder").config.optimizer == "sgd"
    assert build_attack("stolenencoder", {"optimizer": "adam"}).config.optimizer == "adam"


def test_variants_are_defined_by_their_fixed_setting():
    assert build_attack("stolenencoder-wo-aug").config.lam == 0.0
    assert build_attack("stolenencoder-query-aug").config.query_aug is True
    with pytest.raises(ValueError, match="defined by lam=0"):
        build_attack("stolenencoder-wo-aug", {"lam": 5})


def test_normalised_answers_are_unit_vectors_before_the_defence():
    """normalize=True: f(x)/‖f(x)‖ is what the API returns, and a rounding defence rounds *those* to m decimals."""
    torch.manual_seed(0)
    enc = build_encoder("cnn_tiny").eval()
    images = _set(10).images
    raw = embed(enc, images)
    plain = LocalTarget(enc, normalize=True).embed(images)
    assert torch.allclose(plain.norm(dim=1), torch.ones(10), atol=1e-6)
    assert torch.equal(plain, torch.nn.functional.normalize(raw, dim=1))
    rounded = LocalTarget(enc, normalize=True, defence=build_defence({"name": "rounding", "m": 1})).embed(images)
    assert torch.equal(rounded, torch.round(torch.nn.functional.normalize(raw, dim=1) * 10) / 10)
    # raw answers of this small CNN are far from unit length: rounding them would be another defence
    assert not torch.allclose(raw.norm(dim=1), torch.ones(10), atol=0.1)
