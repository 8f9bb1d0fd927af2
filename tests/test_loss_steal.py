"""The ICML'22 loss attacks' two protocols (Dziedzic et al., ICML 2022, arXiv:2205.07890), checked from the
outside: a counting fake target records every image it is asked about, a forward hook records every image
the stolen encoder sees, and each recorded image is identified by hand against the clean image x and its
mirror image flip(x) (the augmentation is "flip" only, so every view is exactly one of the two).

- "augmented" (the blog: "we query the victim encoder with the first augmentation and our stolen copy with
  the second"): e·|D| queries, the target gets A(x), the stolen encoder an independent draw A'(x).
- "released" (steal.py, n_views=1): |D| queries of the clean images; the stolen encoder sees them too.
"""

from __future__ import annotations

import pytest
import torch

import stealkit.attacks.loss_steal  # noqa: F401  (registers steal-*)
import stealkit.attacks.trainer as trainer
from stealkit.attacks.base import build_attack
from stealkit.data.imageset import ImageSet
from stealkit.losses.mse import MSELoss
from stealkit.targets.base import Target

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread

N, SIZE, D = 64, 16, 16
TINY = {"arch": "cnn_tiny", "batch_size": 16, "amp": False, "lr": 3e-3, "augment": "flip", "weight_decay": 0.0}


class CountingTarget(Target):
    """A fake API: a fixed random linear map of the pixels; counts and keeps every image it answers."""

    def __init__(self):
        super().__init__()
        self.asked: list[torch.Tensor] = []
        self.count = 0
        self.w = torch.randn(3 * SIZE * SIZE, D, generator=torch.Generator().manual_seed(7))

    @property
    def feature_dim(self) -> int:
        return D

    def _embed(self, images):
        self.asked.append(images.clone())
        self.count += len(images)
        return images.float().flatten(1).div(255.0) @ self.w


@pytest.fixture(scope="module")
def surrogate():
    """Noise images: none is its own mirror image, so x and flip(x) are told apart exactly."""
    images = torch.randint(0, 256, (N, 3, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    return ImageSet(images, torch.full((N,), -1), [], "noise")


@pytest.fixture
def stolen_inputs(monkeypatch):
    """Every batch the stolen encoder is fed during training (its raw input, before preprocessing)."""
    seen: list[torch.Tensor] = []
    build = trainer.build_encoder

    def recording(*args, **kw):
        enc = build(*args, **kw)
        enc.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach().cpu().clone()))
        return enc

    monkeypatch.setattr(trainer, "build_encoder", recording)
    return seen


def identify(views: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """views (float on the 0–255 scale) -> (image index j, flipped?) per view, by exact comparison with the
    hand-made references clean[j] and clean[j].flip(-1); fails if a view is neither."""
    x, v = clean.float(), views
    refs = torch.cat([x, x.flip(-1)])  # 2N candidates
    dist = (v.flatten(1)[:, None, :] - refs.flatten(1)[None]).abs().amax(-1)  # views × 2N
    best = dist.argmin(1)
    assert bool((dist.gather(1, best[:, None]) < 1e-3).all()), "a view is neither x nor flip(x)"
    return best % len(clean), best >= len(clean)


def per_epoch_flips(batches: list[torch.Tensor], clean: torch.Tensor, epochs: int) -> torch.Tensor:
    """epochs × N: whether image j was flipped in that epoch's view (each image once per epoch)."""
    views = torch.cat([b.float() if b.dtype == torch.uint8 else b * 255.0 for b in batches])
    assert len(views) == epochs * len(clean)
    out = torch.zeros(epochs, len(clean), dtype=torch.bool)
    for e in range(epochs):
        j, flipped = identify(views[e * len(clean) : (e + 1) * len(clean)], clean)
        assert sorted(j.tolist()) == list(range(len(clean)))  # every image exactly once per epoch
        out[e, j] = flipped
    return out


def test_augmented_protocol_queries_a_view_per_epoch_and_trains_on_an_independent_one(surrogate, stolen_inputs):
    epochs = 3
    target = CountingTarget()
    result = build_attack("steal-mse", {**TINY, "epochs": epochs}).steal(target, surrogate, device="cpu", progress=False)
    # billed: e·|D|, and nothing else asked (no clean query)
    assert target.count == epochs * N == result.queries == target.queries
    assert [e["aug_queries"] for e in result.log] == [N] * epochs
    target_flips = per_epoch_flips(target.asked, surrogate.images, epochs)
    stolen_flips = per_epoch_flips(stolen_inputs, surrogate.images, epochs)
    # the target gets augmented images: about half mirrored (the clean protocol would mirror none)
    assert 0.3 < target_flips.float().mean() < 0.7
    assert 0.3 < stolen_flips.float().mean() < 0.7
    # the stolen encoder's view is an independent draw: it disagrees with the target's about half the time
    # (one shared draw would never disagree)
    assert 0.3 < (target_flips != stolen_flips).float().mean() < 0.7
    # and every epoch is a fresh draw for the target
    assert not torch.equal(target_flips[0], target_flips[1])


def test_released_protocol_asks_the_clean_images_once_and_trains_on_them(surrogate, stolen_inputs):
    epochs = 2
    target = CountingTarget()
    result = build_attack("steal-mse", {**TINY, "epochs": epochs, "protocol": "released", "batch_size": 16}).steal(
        target, surrogate, device="cpu", progress=False)
    assert target.count == N == result.queries
    assert torch.equal(torch.cat(target.asked), surrogate.images)
    assert not per_epoch_flips(stolen_inputs, surrogate.images, epochs).any()


@pytest.mark.parametrize("name", ["steal-mse", "steal-infonce", "steal-softnn", "steal-wasserstein"])
def test_protocol_views(name):
    aug = build_attack(name).make_loss()
    assert aug.stolen_views == frozenset({"aug2"}) and aug.target_views == frozenset({"aug"})
    rel = build_attack(name, {"protocol": "released"}).make_loss()
    assert rel.stolen_views == rel.target_views == frozenset({"clean"})


def test_the_target_has_no_second_view():
    loss = MSELoss(stolen_view="aug", target_view="aug2")
    with pytest.raises(ValueError, match="'aug2' is a view of the stolen encoder only"):
        trainer.train_stolen_encoder(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), None, {"batch_size": 2}, loss,
                                     feature_dim=4, query_augmented=lambda x: (torch.zeros(len(x), 4), len(x)))
