"""Architectures, preprocessing, checkpoints and augmentation."""

import json

import pytest
import torch

from stealkit.augment import Augmenter, parse_augmentations
from stealkit.models.architectures import ARCHITECTURES
from stealkit.models.checkpoint import load_encoder, read_sidecar, save_encoder
from stealkit.models.encoder import build_encoder

EXPECTED_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "vgg19": 512, "vgg19_bn": 512,
                 "densenet121": 1024, "mobilenet_v2": 1280, "shufflenet_v2": 1024, "cnn_tiny": 64, "cnn_small": 128}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_gives_its_declared_dim_at_32(arch):
    enc = build_encoder(arch).eval()
    with torch.no_grad():
        y = enc(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert y.shape == (2, enc.feature_dim)
    assert enc.feature_dim == EXPECTED_DIMS[arch]


def test_cifar_stem_keeps_resolution():
    enc = build_encoder("resnet18")
    conv = enc.backbone.conv1
    assert (conv.kernel_size, conv.stride, conv.padding) == ((3, 3), (1, 1), (1, 1))
    assert isinstance(enc.backbone.maxpool, torch.nn.Identity)


def test_uint8_and_float_inputs_agree_and_resize():
    enc = build_encoder("cnn_tiny").eval()
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(enc(x), enc(x.float() / 255), atol=1e-5)
        assert enc(torch.rand(2, 3, 64, 64)).shape == (2, 64)
    with pytest.raises(ValueError, match="N×3×H×W"):
        enc(torch.rand(2, 1, 32, 32))


def test_out_dim_head_matches_target_dim():
    enc = build_encoder("cnn_tiny", out_dim=512)
    assert enc.feature_dim == 512
    assert enc(torch.rand(2, 3, 32, 32)).shape == (2, 512)


def test_checkpoint_round_trip_equal_outputs(tmp_path):
    enc = build_encoder("resnet18").eval()
    # change BN running stats so buffers matter
    enc.train()
    with torch.no_grad():
        enc(torch.rand(8, 3, 32, 32))
    enc.eval()
    path = save_encoder(enc, tmp_path / "victim", train_config={"epochs": 3}, dataset="x:train", seed=7)
    meta = read_sidecar(path)
    assert meta["spec"]["arch"] == "resnet18" and meta["spec"]["feature_dim"] == 512
    assert meta["seed"] == 7 and "torch" in meta["environment"]
    loaded = load_encoder(tmp_path / "victim.safetensors")
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(enc(x), loaded(x))


def test_checkpoint_rejects_foreign_sidecar(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a stealkit encoder checkpoint"):
        load_encoder(tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="sidecar"):
        load_encoder(tmp_path / "missing")


def test_augmentation_is_per_sample():
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).repeat(64, 1, 1, 1)
    for names in ("flip+jitter+gray", "crop", "jitter"):
        torch.manual_seed(0)
        y = Augmenter(names)(x)
        assert y.shape == (64, 3, 32, 32) and y.min() >= 0 and y.max() <= 1
        distinct = len({tuple(v.flatten()[:200].tolist()) for v in y})
        assert distinct > 10, f"{names}: identical inputs gave only {distinct} distinct outputs"


def test_flip_alone_flips_about_half():
    x = torch.arange(32, dtype=torch.uint8).view(1, 1, 1, 32).expand(400, 3, 32, 32).contiguous()
    torch.manual_seed(0)
    y = Augmenter("flip")(x)
    flipped = (y[:, 0, 0, 0] > y[:, 0, 0, -1]).float().mean().item()
    assert 0.4 < flipped < 0.6
    assert torch.equal(Augmenter("none")(x), x.float() / 255)


def test_parse_augmentations():
    assert parse_augmentations("flip+jitter+gray") == ("flip", "jitter", "gray")
    assert parse_augmentations(["crop"]) == ("crop",)
    assert parse_augmentations("none") == ()
    with pytest.raises(ValueError, match="unknown augmentation"):
        parse_augmentations("flip+rotate")


def test_exact_fp32_turns_tf32_off_on_cuda_and_restores_it():
    """Only flags are flipped, so this runs without a GPU. A user script may have asked for TF32 matmuls
    the usual way first: inside the block torch's settings must still agree (reading them must not raise)."""
    from stealkit.runtime import exact_fp32

    def conv():
        return torch.backends.cudnn.conv.fp32_precision
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        before = (torch.get_float32_matmul_precision(), conv())
        with exact_fp32(torch.device("cuda")):
            assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cuda.matmul.allow_tf32
            assert conv() == "ieee"
        assert (torch.get_float32_matmul_precision(), conv()) == before and torch.backends.cuda.matmul.allow_tf32
        with exact_fp32(torch.device("cpu")):
            assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(saved)
