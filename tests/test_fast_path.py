"""The CPU fast path (bf16 autocast where the CPU has bf16 units, NHWC weights) never touches what an API
answers, and a bf16 training step computes the fp32 step's loss within bf16's precision.

Tolerances: bf16 keeps 8 significant bits (relative rounding 2⁻⁸ ≈ 0.4%); a forward pass of a small CNN
accumulates that over a few layers, so the bf16 loss is held to 3% of the fp32 one, and NHWC fp32
features (another summation order) to 1e-4 relative."""

from __future__ import annotations

import pytest
import torch

from stealkit.data.imageset import ImageSet
from stealkit.models.encoder import build_encoder, embed, is_channels_last
from stealkit.targets import LocalTarget

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.precision]


@pytest.fixture
def images():
    return torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch", ["cnn_tiny", "resnet18"])
def test_answers_are_bitwise_unchanged_by_the_fast_path(arch, images, monkeypatch):
    torch.manual_seed(0)
    enc = build_encoder(arch).eval()
    reference = LocalTarget(enc, normalize=True).embed(images)
    for bf16 in ("on", "off"):
        for cl in ("on", "off"):
            monkeypatch.setenv("STEALKIT_BF16", bf16)
            monkeypatch.setenv("STEALKIT_CHANNELS_LAST", cl)
            assert torch.equal(LocalTarget(enc, normalize=True).embed(images), reference), (bf16, cl)
    # an encoder left in NHWC by a fast training or extraction path answers the same bytes
    enc.to(memory_format=torch.channels_last)
    assert is_channels_last(enc)
    assert torch.equal(LocalTarget(enc, normalize=True).embed(images), reference)
    assert is_channels_last(enc)  # and is left as it was found


def test_nhwc_features_for_probes_match_exact_ones(images):
    torch.manual_seed(0)
    enc = build_encoder("resnet18").eval()
    exact, fast = embed(enc, images), embed(enc, images, fast=True)
    assert torch.allclose(fast, exact, rtol=1e-4, atol=1e-5 * exact.abs().max().item())
    assert not is_channels_last(enc)


def _one_step_loss(monkeypatch, bf16: str) -> float:
    from stealkit.attacks.stolen_encoder import StealConfig, train_stolen_encoder

    monkeypatch.setenv("STEALKIT_BF16", bf16)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=g)
    t = torch.nn.functional.normalize(torch.randn(32, 64, generator=g), dim=1)
    cfg = StealConfig(arch="cnn_tiny", epochs=1, batch_size=32, augment="flip", seed=0)
    _, log = train_stolen_encoder(x, t, cfg, device="cpu", progress=False)
    return log[0]["loss"]


def test_a_bf16_training_step_matches_fp32_within_tolerance(monkeypatch):
    fp32, bf16 = _one_step_loss(monkeypatch, "off"), _one_step_loss(monkeypatch, "on")
    assert bf16 != fp32  # bf16 really ran
    assert abs(bf16 - fp32) <= 0.03 * abs(fp32), (bf16, fp32)


def test_the_bf16_probe_step_matches_fp32_within_tolerance(monkeypatch):
    from stealkit.probes.mlp import BatchedMLP, _step_loss

    g = torch.Generator().manual_seed(2)
    X, Y = torch.randn(1, 64, 32, generator=g), torch.randint(0, 5, (1, 64), generator=g)
    model = BatchedMLP([32], (64, 32), 5, [0])
    idx = torch.arange(64)[None]
    fp32, bf16 = _step_loss(model, X, Y, idx).item(), _step_loss(model, X, Y, idx, amp=True).item()
    assert bf16 != fp32 and abs(bf16 - fp32) <= 0.03 * abs(fp32)


def test_the_cpu_decides_bf16_by_its_hardware_and_the_setting_overrides(monkeypatch):
    from stealkit import runtime

    cpu = torch.device("cpu")
    monkeypatch.delenv("STEALKIT_BF16", raising=False)
    assert runtime.bf16_enabled(cpu) == runtime.cpu_has_fast_bf16()
    monkeypatch.setenv("STEALKIT_BF16", "on")
    assert runtime.bf16_enabled(cpu)
    monkeypatch.setenv("STEALKIT_BF16", "off")
    assert not runtime.bf16_enabled(cpu)
    monkeypatch.setenv("STEALKIT_BF16", "sometimes")
    with pytest.raises(ValueError, match="auto, on or off"):
        runtime.bf16_enabled(cpu)
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2"}))
    runtime.cpu_has_fast_bf16.cache_clear()
    try:
        assert not runtime.cpu_has_fast_bf16()  # no AMX/AVX512-BF16: no bf16 fast path, whatever oneDNN says
    finally:
        runtime.cpu_has_fast_bf16.cache_clear()
