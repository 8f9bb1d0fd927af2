"""View alignment (EncoderMI's membership signal, Liu et al., CCS 2021) and dataset inference on
precomputed representations: closed forms against explicit loops, and a planted signal."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn as nn

from stealkit.verify.alignment import augmented_views, pairwise_alignment, view_alignment
from stealkit.verify.dataset_inference import dataset_inference_reps, fit_gmm

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pairwise_alignment_equals_the_mean_over_pairs():
    g = torch.Generator().manual_seed(0)
    reps = (torch.randn(5, 7, 3, generator=g) * torch.rand(5, 7, 1, generator=g)).double()  # unnormalised on purpose
    z = reps / reps.norm(dim=-1, keepdim=True)
    expected = [np.mean([float(z[a, i] @ z[b, i]) for a, b in itertools.combinations(range(5), 2)]) for i in range(7)]
    np.testing.assert_allclose(pairwise_alignment(reps), expected, atol=1e-12)


def test_pairwise_alignment_hand_values():
    # two views: identical -> 1, orthogonal -> 0, opposite -> -1
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    np.testing.assert_allclose(pairwise_alignment(torch.stack([a, b])), [1.0, 0.0, -1.0], atol=1e-12)


def test_augmented_views_are_seeded_and_independent():
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    v1, v2 = augmented_views(images, 3, seed=4), augmented_views(images, 3, seed=4)
    assert v1.shape == (3, 6, 3, 16, 16) and v1.dtype == torch.uint8
    assert torch.equal(v1, v2)  # same seed, same views: every suspect is scored on identical inputs
    assert not torch.equal(v1[0], v1[1])  # the views of one image differ from each other
    with pytest.raises(ValueError, match="at least 2 views"):
        augmented_views(images, 1)


def test_view_alignment_of_a_view_invariant_encoder_is_one():
    """An encoder that only sees the mean colour over a crop-free, flip-only augmentation maps every view
    of an image to the same vector: alignment 1 exactly."""

    class MeanColour(nn.Module):
        def __init__(self):
            super().__init__()
            self.offset = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x.float().mean(dim=(2, 3)) + self.offset

    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    views = augmented_views(images, 4, augment="flip", seed=0)
    np.testing.assert_allclose(view_alignment(MeanColour(), views), np.ones(5), atol=1e-6)


def test_dataset_inference_reps_detects_a_planted_density_gap():
    """Private representations drawn closer to the mixture's centres than public ones: p small; swapped: p large."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 4
    def draw(n, spread):
        return centres[rng.integers(0, 3, n)] + rng.normal(size=(n, 8)) * spread
    fit, priv, pub = draw(600, 1.0), draw(300, 0.8), draw(300, 1.0)
    r = dataset_inference_reps(fit, priv, pub, n_components=3)
    assert r.p_value < 1e-6 and r.stolen and r.n_fit == 600 and r.n_train == 300
    swapped = dataset_inference_reps(fit, pub, priv, n_components=3)
    assert swapped.p_value > 0.5 and not swapped.stolen
    # a fitted mixture passed in is used as is: the same numbers as fitting it here with the same seed
    again = dataset_inference_reps(None, priv, pub, gmm=fit_gmm(fit, 3), n_fit=600)
    assert again.p_value == pytest.approx(r.p_value) and again.t_statistic == pytest.approx(r.t_statistic)
    with pytest.raises(ValueError, match="fit"):
        dataset_inference_reps(None, priv, pub)


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # the constant-score case, on purpose
def test_alignment_scores_test_direction_and_constant_scores():
    from stealkit.verify.alignment import alignment_scores_test

    rng = np.random.default_rng(1)
    high, low = 0.92 + 0.01 * rng.standard_normal(400), 0.91 + 0.01 * rng.standard_normal(400)
    r = alignment_scores_test(high, low, alpha=0.01)
    assert r.p_value < 1e-10 and r.stolen and r.mean_private > r.mean_public and r.n_private == 400
    swapped = alignment_scores_test(low, high, alpha=0.01)
    assert swapped.p_value > 1 - 1e-10 and not swapped.stolen  # one-sided: better alignment of *public* images is no evidence
    flat = alignment_scores_test(np.ones(5), np.ones(5))
    assert flat.p_value == 1.0 and not flat.stolen


def test_pairwise_alignment_counts_a_zero_vector_as_zero_cosine():
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[0.0, 0.0]])
    c = torch.tensor([[1.0, 0.0]])
    # pairs (a,b) 0, (a,c) 1, (b,c) 0 -> 1/3
    np.testing.assert_allclose(pairwise_alignment(torch.stack([a, b, c])), [1 / 3], atol=1e-12)


def test_bonferroni_verdict_over_the_tests():
    from stealkit.verify.suspect import SuspectReport

    report = SuspectReport(alpha=0.01)
    report.tests = {"a": {"p_value": 0.008, "queries": 0}, "b": {"p_value": 0.5, "queries": 0}}
    assert report.threshold == pytest.approx(0.005) and not report.stolen  # 0.008 < alpha but not < alpha / 2
    report.tests["a"]["p_value"] = 0.004
    assert report.stolen and "stolen" in report.verdict
