"""Our vectorised augmentation ops against torchvision's functional transforms (independent reference)."""

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import v2

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


def test_randaugment_gives_each_image_its_own_ops():
    """torchvision's RandAugment on a batch tensor draws one op pair for the whole batch; ours draws per image."""
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)).repeat(16, 1, 1, 1)
    torch.manual_seed(0)
    shared = TF.to_dtype(v2.RandAugment(num_ops=2, magnitude=14)(x), torch.float32, scale=True)
    assert all(torch.equal(shared[0], s) for s in shared)  # the reason for the per-image loop
    torch.manual_seed(0)
    y = Augmenter("randaugment")(x)
    assert y.shape == x.shape and y.dtype == torch.float32 and 0 <= y.min() and y.max() <= 1
    assert not torch.equal(y[0], y[1])
    assert len({v.numpy().tobytes() for v in y}) >= 10


def test_randaugment_is_torchvisions_transform_applied_image_by_image():
    """Independent reference: torchvision's v2.RandAugment(2, 14) called on each uint8 image in turn, from the same seed."""
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(5)
    ra = v2.RandAugment(num_ops=2, magnitude=14)
    ref = torch.stack([ra(img) for img in x]).float() / 255.0
    torch.manual_seed(5)
    torch.testing.assert_close(Augmenter("randaugment", size=16)(x), ref, atol=0, rtol=0)


def test_randaugment_falls_back_to_one_call_per_image(monkeypatch):
    """Without the torchvision internals the grouped path uses, each image goes through the public transform."""

    class PublicOnly:
        def __init__(self):
            self.ra = v2.RandAugment(num_ops=2, magnitude=14)

        def __call__(self, img):
            return self.ra(img)

    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(5)
    grouped = ops.rand_augment(x)
    monkeypatch.setitem(ops._RAND_AUGMENT, (2, 14), PublicOnly())
    torch.manual_seed(5)
    torch.testing.assert_close(ops.rand_augment(x), grouped, atol=0, rtol=0)


def shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Hand-written reference: img moved down by dy and right by dx, zeros where nothing moved in."""
    out = torch.zeros_like(img)
    h, w = img.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[..., max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    return out


def test_padcrop_keeps_the_size_and_shifts_by_at_most_4_pixels():
    """RandomCrop(size, padding=4): every output is the input moved by (dy, dx), |dy|, |dx| <= 4, zero-filled;
    over many images the shifts cover the whole 9×9 range."""
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3)).add_(0.1).repeat(400, 1, 1, 1)  # no zero pixel
    torch.manual_seed(0)
    y = ops.random_pad_crop(x, padding=4)
    assert y.shape == x.shape
    found = set()
    for img in y:
        hits = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5) if torch.equal(img, shifted(x[0], dy, dx))]
        assert len(hits) == 1
        found.add(hits[0])
    assert len(found) == 81
    assert Augmenter("padcrop", size=16)(x[:2]).shape == (2, 3, 16, 16)


def test_released_cont_steal_pipeline_is_seeded():
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    aug = Augmenter("randaugment+padcrop+flip")
    torch.manual_seed(0)
    a = aug(x)
    torch.manual_seed(0)
    b = aug(x)
    torch.manual_seed(1)
    c = aug(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert Augmenter("randaugment+padcrop+flip", backend="kornia").names == ("randaugment", "padcrop", "flip")
