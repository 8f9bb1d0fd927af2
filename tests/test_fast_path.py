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


def _flags_from_proc_cpuinfo() -> set[str] | None:
    """This machine's CPU flags read here, not through stealkit: the first "flags" line of /proc/cpuinfo."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return set(value.split())
    return None


def _onednn_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@pytest.fixture
def fresh_cpu_decision():
    """cpu_flags and cpu_has_fast_bf16 are lru_cache'd: clear them around a test that simulates another CPU."""
    from stealkit import runtime

    cached = (runtime.cpu_flags, runtime.cpu_has_fast_bf16)  # the real ones: a test may patch cpu_flags
    for fn in cached:
        fn.cache_clear()
    yield runtime
    for fn in cached:
        fn.cache_clear()


def test_the_fast_path_follows_this_cpus_own_flags(monkeypatch, fresh_cpu_decision):
    """On this machine, read independently: bf16 hardware (AMX-BF16 or AVX512-BF16) and oneDNN bf16 -> on;
    neither flag -> off (a CPU with only AVX2 emulates bf16 about 20x slower)."""
    runtime = fresh_cpu_decision
    flags = _flags_from_proc_cpuinfo()
    if flags is None:
        pytest.skip("no /proc/cpuinfo flags line on this machine")
    monkeypatch.delenv("STEALKIT_BF16", raising=False)
    cpu = torch.device("cpu")
    assert runtime.cpu_flags() == frozenset(flags)
    hw = bool({"amx_bf16", "avx512_bf16"} & flags)
    if hw and _onednn_bf16():
        assert runtime.bf16_enabled(cpu) and isinstance(runtime.autocast(cpu), torch.autocast)
    elif not hw:
        assert not runtime.bf16_enabled(cpu) and not isinstance(runtime.autocast(cpu), torch.autocast)
    else:  # bf16 flags but a oneDNN without bf16 kernels: off
        assert not runtime.bf16_enabled(cpu)


# Three kinds of CPU, by their /proc/cpuinfo flags (abridged from real machines)
AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c"})  # e.g. AMD EPYC (Zen 2/3)
AVX512_BF16 = AVX2_ONLY | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"}  # e.g. Cooper Lake, Zen 4
AMX = AVX512_BF16 | {"amx_tile", "amx_int8", "amx_bf16", "avx512_fp16"}  # e.g. Sapphire Rapids


@pytest.mark.parametrize(
    "flags, onednn, expected",
    [
        (AVX2_ONLY, True, False),  # no bf16 units: off, whatever oneDNN says
        (AVX2_ONLY, False, False),
        (AVX512_BF16, True, True),
        (AVX512_BF16, False, False),  # units present but oneDNN cannot use them
        (AMX, True, True),
        (AMX - {"avx512_bf16"}, True, True),  # AMX-BF16 alone suffices
        (AMX, False, False),
    ],
    ids=["avx2", "avx2-no-onednn", "avx512bf16", "avx512bf16-no-onednn", "amx", "amx-only", "amx-no-onednn"],
)
def test_the_bf16_decision_for_each_kind_of_cpu(monkeypatch, fresh_cpu_decision, flags, onednn, expected):
    runtime = fresh_cpu_decision
    monkeypatch.setattr(runtime, "cpu_flags", lambda: flags)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)
    monkeypatch.delenv("STEALKIT_BF16", raising=False)
    cpu = torch.device("cpu")
    assert runtime.cpu_has_fast_bf16() is expected
    assert runtime.bf16_enabled(cpu) is expected
    assert isinstance(runtime.autocast(cpu), torch.autocast) is expected
    assert runtime.precision_record(cpu)["cpu_fast_bf16"] is expected
    assert runtime.bf16_enabled(torch.device("cuda"))  # CUDA: on whatever the host CPU is
    monkeypatch.setenv("STEALKIT_BF16", "off" if expected else "on")  # the setting overrides the hardware both ways
    assert runtime.bf16_enabled(cpu) is (not expected)


def test_the_setting_overrides_and_rejects_nonsense(monkeypatch):
    from stealkit import runtime

    cpu = torch.device("cpu")
    monkeypatch.setenv("STEALKIT_BF16", "on")
    assert runtime.bf16_enabled(cpu)
    monkeypatch.setenv("STEALKIT_BF16", "off")
    assert not runtime.bf16_enabled(cpu) and not runtime.bf16_enabled(torch.device("cuda"))
    monkeypatch.setenv("STEALKIT_BF16", "sometimes")
    with pytest.raises(ValueError, match=r"\$STEALKIT_BF16='sometimes': use auto, on or off"):
        runtime.bf16_enabled(cpu)
