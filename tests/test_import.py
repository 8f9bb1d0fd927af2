"""`stealkit import`: a provider's own weights (torchvision/timm state dicts, safetensors or .pt, sharded,
prefixed) become a stealkit checkpoint; mismatches get a clear error; pickled objects are never unpickled."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision.models as tvm
from safetensors.torch import save_file
from typer.testing import CliRunner

from conftest import require_victim
from stealkit.cli import app
from stealkit.models.checkpoint import load_encoder, read_sidecar
from stealkit.models.encoder import EncoderSpec, embed
from stealkit.models.importer import WeightsImportError, import_encoder, read_weights, suggest_prefix

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616)


def provider_resnet18(seed=0) -> nn.Module:
    """A provider's CIFAR-stem ResNet18 built by hand from torchvision (the reference implementation)."""
    torch.manual_seed(seed)
    net = tvm.resnet18()
    net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a wrong mapping shows
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def state_of(net: nn.Module, prefix: str = "", dtype=None) -> dict:
    out = {}
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue  # as the shared victim: exported without the counters
        out[prefix + k] = v.to(dtype) if dtype is not None and v.is_floating_point() else v.clone()
    return out


def reference_features(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    x = images.float() / 255.0
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return net(x)


SPEC = dict(arch="resnet18", input_size=32, cifar_stem=True, mean=MEAN, std=STD)
IMAGES = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))


def test_safetensors_state_dict_imports_and_matches_the_reference(tmp_path):
    net = provider_resnet18()
    save_file(state_of(net), str(tmp_path / "w.safetensors"))
    enc, info = import_encoder([tmp_path / "w.safetensors"], EncoderSpec(**SPEC))
    assert torch.allclose(embed(enc, IMAGES), reference_features(net, IMAGES), atol=1e-5)
    assert info["tensors"] == len(state_of(net)) and info["source_dtypes"] == ["float32"]


def test_pt_state_dict_prefixed_and_nested(tmp_path):
    net = provider_resnet18(1)
    torch.save({"state_dict": state_of(net, "module.backbone."), "epoch": 100}, tmp_path / "ckpt.pth")
    with pytest.raises(WeightsImportError) as err:
        import_encoder([tmp_path / "ckpt.pth"], EncoderSpec(**SPEC))
    msg = str(err.value)
    assert "missing" in msg and "unexpected" in msg and "--strip-prefix module.backbone." in msg
    enc, _ = import_encoder([tmp_path / "ckpt.pth"], EncoderSpec(**SPEC), strip="module.backbone.")
    assert torch.allclose(embed(enc, IMAGES), reference_features(net, IMAGES), atol=1e-5)


def test_sharded_fp16_weights_merge(tmp_path):
    net = provider_resnet18(2)
    state = state_of(net, dtype=torch.float16)
    keys = sorted(state)
    for i, part in enumerate((keys[:40], keys[40:80], keys[80:])):
        save_file({k: state[k] for k in part}, str(tmp_path / f"part{i}.safetensors"))
    enc, info = import_encoder([tmp_path], EncoderSpec(**SPEC))  # a folder of shards
    assert len(info["files"]) == 3 and info["source_dtypes"] == ["float16"]
    half = provider_resnet18(2)
    half.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    assert torch.allclose(embed(enc, IMAGES), reference_features(half, IMAGES), atol=1e-5)
    # the same key in two shards is an error, not a silent overwrite
    save_file({keys[0]: state[keys[0]]}, str(tmp_path / "dup.safetensors"))
    with pytest.raises(WeightsImportError, match="in two shards"):
        read_weights([tmp_path])


def test_mismatch_lists_missing_unexpected_and_hints(tmp_path):
    net = provider_resnet18()
    state = state_of(net)
    state["fc.weight"] = torch.zeros(10, 512)
    del state["layer4.1.bn2.weight"]
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(WeightsImportError) as err:
        import_encoder([tmp_path / "w.safetensors"], EncoderSpec(**SPEC))
    msg = str(err.value)
    assert "1 missing and 1 unexpected" in msg and "layer4.1.bn2.weight" in msg and "fc.weight" in msg
    assert "--ignore-prefix fc." in msg
    # a 7×7 ImageNet stem against the CIFAR stem: the shape error says which flag fits
    imagenet = {k: v for k, v in state_of(tvm.resnet18().eval()).items() if not k.startswith("fc.")}
    save_file(imagenet, str(tmp_path / "in.safetensors"))
    with pytest.raises(WeightsImportError, match="drop --cifar-stem"):
        import_encoder([tmp_path / "in.safetensors"], EncoderSpec(**SPEC))
    enc, _ = import_encoder([tmp_path / "in.safetensors"], EncoderSpec(**{**SPEC, "cifar_stem": False}))
    assert enc.feature_dim == 512


class Payload:
    """Unpickling this object would create a file: proof that something was unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_object_is_refused_without_being_unpickled(tmp_path):
    marker = tmp_path / "UNPICKLED"
    torch.save({"conv1.weight": torch.zeros(1), "evil": Payload(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(WeightsImportError, match="never unpickles"):
        read_weights([tmp_path / "evil.pt"])
    assert not marker.exists()


def test_suggest_prefix():
    assert suggest_prefix(["encoder.a", "encoder.b", "head.c"], ["a", "b"]) == "encoder."
    assert suggest_prefix(["a", "b"], ["a", "b"]) is None


def test_timm_names_import(tmp_path):
    timm = pytest.importorskip("timm", reason="timm is not installed (pip install timm)")
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    save_file({k: v for k, v in net.state_dict().items()}, str(tmp_path / "t.safetensors"))
    spec = EncoderSpec(arch="timm:resnet18", input_size=64, cifar_stem=False, mean=MEAN, std=STD)
    enc, _ = import_encoder([tmp_path / "t.safetensors"], spec)
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    assert torch.allclose(embed(enc, x), reference_features(net, x), atol=1e-5)


def test_cli_import_writes_a_checkpoint_every_command_loads(tmp_path):
    net = provider_resnet18()
    save_file(state_of(net, "backbone."), str(tmp_path / "w.safetensors"))
    runner = CliRunner()
    out = tmp_path / "victim"
    bad = runner.invoke(app, ["import", str(tmp_path / "w.safetensors"), "--arch", "resnet18", "--cifar-stem", "--out", str(out)])
    assert bad.exit_code == 2 and "--strip-prefix backbone." in bad.output and "Traceback" not in bad.output
    ok = runner.invoke(app, ["import", str(tmp_path / "w.safetensors"), "--arch", "resnet18", "--cifar-stem", "--strip-prefix",
                             "backbone.", "--dtype", "float16", "--dataset-size", "50000", "--trained-on", "cifar10:train",
                             "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    enc = load_encoder(out)
    assert torch.allclose(embed(enc, IMAGES), reference_features(net, IMAGES), atol=5e-2)  # stored as fp16
    meta = read_sidecar(out)
    assert meta["dataset_size"] == 50000 and meta["imported"]["strip_prefix"] == "backbone."
    unknown = runner.invoke(app, ["import", str(tmp_path / "w.safetensors"), "--arch", "resnet81", "--out", str(out)])
    assert unknown.exit_code == 2 and "did you mean 'resnet18'" in unknown.output


def test_a_pt_path_is_not_read_as_a_checkpoint(tmp_path):
    torch.save(state_of(provider_resnet18()), tmp_path / "rn18.pt")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "rn18.safetensors"))  # a same-stem file must not be picked up
    with pytest.raises(FileNotFoundError, match="stealkit import"):
        load_encoder(tmp_path / "rn18.pt")


@pytest.mark.shared_data
def test_the_shared_real_victim_imports():
    """The provider's CIFAR-10 SimCLR ResNet18 in ../shared/victims (fp16, three shards, no prefix)."""
    folder = require_victim("cifar10_simclr_resnet18")
    enc, info = import_encoder([folder], EncoderSpec(**SPEC))
    assert len(info["files"]) == 3 and info["source_dtypes"] == ["float16"] and info["tensors"] == 100
    feats = embed(enc, IMAGES)
    assert feats.shape == (6, 512) and torch.isfinite(feats).all() and (feats >= 0).all()  # post-ReLU pooling
