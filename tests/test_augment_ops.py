"""Our vectorised augmentation ops against torchvision's functional transforms (independent reference)."""

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from stealkit import augment_ops as ops
from stealkit.augment import Augmenter


@pytest.fixture
def imgs():
    return torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("factor", [0.6, 1.0, 1.4])
def test_brightness_contrast_saturation_match_torchvision(imgs, factor):
    f = torch.full((len(imgs),), factor)
    torch.testing.assert_close(ops.adjust_brightness(imgs.clone(), f), TF.adjust_brightness(imgs, factor), atol=1e-5, rtol=0)
    torch.testing.assert_close(ops.adjust_contrast(imgs.clone(), f), TF.adjust_contrast(imgs, factor), atol=1e-5, rtol=0)
    torch.testing.assert_close(ops.adjust_saturation(imgs.clone(), f), TF.adjust_saturation(imgs, factor), atol=1e-5, rtol=0)


@pytest.mark.parametrize("shift", [-0.1, 0.05, 0.3])
def test_hue_matches_torchvision(imgs, shift):
    f = torch.full((len(imgs),), shift)
    torch.testing.assert_close(ops.adjust_hue(imgs.clone(), f), TF.adjust_hue(imgs, shift), atol=1e-4, rtol=0)


def test_hsv_round_trip(imgs):
    torch.testing.assert_close(ops.hsv_to_rgb(ops.rgb_to_hsv(imgs)), imgs, atol=1e-5, rtol=0)


def test_per_image_factors_differ():
    x = torch.rand(1, 3, 8, 8).repeat(2, 1, 1, 1)
    y = ops.adjust_brightness(x.clone(), torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(y[0], (x[0] * 0.5).clamp(0, 1))
    torch.testing.assert_close(y[1], x[1])


def test_grayscale_matches_torchvision(imgs):
    torch.testing.assert_close(ops.grayscale(imgs), TF.rgb_to_grayscale(imgs), atol=1e-6, rtol=0)


def test_full_crop_is_identity():
    x = torch.rand(3, 3, 32, 32)
    torch.manual_seed(0)
    y = ops.random_resized_crop(x, 32, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)


def test_crop_zooms_into_a_region():
    # left half black, right half white; small crops are mostly one colour
    x = torch.zeros(200, 3, 32, 32)
    x[..., 16:] = 1.0
    torch.manual_seed(0)
    y = ops.random_resized_crop(x, 32, scale=(0.05, 0.05))
    means = y.mean(dim=(1, 2, 3))
    assert ((means < 0.2) | (means > 0.8)).float().mean() > 0.5


@pytest.mark.parametrize("backend", ["torch", "kornia"])
def test_backends_give_per_sample_draws(backend):
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).repeat(32, 1, 1, 1)
    torch.manual_seed(0)
    y = Augmenter("crop+flip+jitter+gray", backend=backend)(x)
    assert y.shape == (32, 3, 32, 32) and 0 <= y.min() and y.max() <= 1
    assert len({tuple(v.flatten()[:64].tolist()) for v in y}) > 20
