"""Backbone registry: torchvision architectures with a CIFAR stem for 32×32 inputs.

CIFAR stem (as in the SimCLR/StolenEncoder code): the first convolution becomes 3×3, stride 1,
padding 1, and the first max-pool is removed, so a 32×32 image keeps its resolution through the
stem. Every builder returns (backbone, feature_dim) where backbone maps N×3×H×W floats to N×D.

Beyond the registry, `torchvision:NAME` is any torchvision classification model without its last
Linear layer, and `timm:NAME` any timm model with `num_classes=0` (timm installed): the names a
provider's own weights are imported under (`stealkit import`).
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn
import torchvision.models as tvm

ARCHITECTURES: dict[str, Callable[[bool], tuple[nn.Module, int]]] = {}


def register(name: str):
    def wrap(fn):
        ARCHITECTURES[name] = fn
        return fn

    return wrap


def _cifar_conv(old: nn.Conv2d) -> nn.Conv2d:
    return nn.Conv2d(old.in_channels, old.out_channels, kernel_size=3, stride=1, padding=1, bias=old.bias is not None)


def _resnet(ctor, cifar_stem: bool) -> tuple[nn.Module, int]:
    net = ctor(weights=None)
    if cifar_stem:
        net.conv1 = _cifar_conv(net.conv1)
        net.maxpool = nn.Identity()
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


@register("resnet18")
def resnet18(cifar_stem: bool = True):
    return _resnet(tvm.resnet18, cifar_stem)


@register("resnet34")
def resnet34(cifar_stem: bool = True):
    return _resnet(tvm.resnet34, cifar_stem)


@register("resnet50")
def resnet50(cifar_stem: bool = True):
    return _resnet(tvm.resnet50, cifar_stem)


def _vgg(ctor, cifar_stem: bool) -> tuple[nn.Module, int]:
    # On 32×32 the five VGG pools leave 1×1×512; global pooling gives the 512-d feature at any size.
    net = ctor(weights=None)
    return nn.Sequential(net.features, nn.AdaptiveAvgPool2d(1), nn.Flatten()), 512


@register("vgg19")
def vgg19(cifar_stem: bool = True):
    return _vgg(tvm.vgg19, cifar_stem)


@register("vgg19_bn")
def vgg19_bn(cifar_stem: bool = True):
    return _vgg(tvm.vgg19_bn, cifar_stem)


@register("densenet121")
def densenet121(cifar_stem: bool = True):
    net = tvm.densenet121(weights=None)
    if cifar_stem:
        net.features.conv0 = _cifar_conv(net.features.conv0)
        net.features.pool0 = nn.Identity()
    dim = net.classifier.in_features
    return nn.Sequential(net.features, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()), dim


@register("mobilenet_v2")
def mobilenet_v2(cifar_stem: bool = True):
    net = tvm.mobilenet_v2(weights=None)
    if cifar_stem:
        net.features[0][0] = _cifar_conv(net.features[0][0])
    dim = net.last_channel
    return nn.Sequential(net.features, nn.AdaptiveAvgPool2d(1), nn.Flatten()), dim


@register("shufflenet_v2")
def shufflenet_v2(cifar_stem: bool = True):
    net = tvm.shufflenet_v2_x1_0(weights=None)
    if cifar_stem:
        net.conv1[0] = _cifar_conv(net.conv1[0])
        net.maxpool = nn.Identity()
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


TORCHVISION_PREFIX, TIMM_PREFIX = "torchvision:", "timm:"

ARCH_NOTES = {
    "resnet18": "ResNet18 (torchvision layout; CIFAR stem optional)", "resnet34": "ResNet34 (CIFAR stem optional)",
    "resnet50": "ResNet50 (CIFAR stem optional)", "vgg19": "VGG19 features + global pooling", "vgg19_bn": "VGG19-BN features + global pooling",
    "densenet121": "DenseNet121 (CIFAR stem optional)", "mobilenet_v2": "MobileNetV2 (CIFAR stem optional)",
    "shufflenet_v2": "ShuffleNetV2 x1.0 (CIFAR stem optional)", "cnn_tiny": "small CNN for laptops (64-d)", "cnn_small": "small CNN (128-d)",
}


def arch_info(name: str) -> dict:
    """Expected input of an architecture: {input_size, normalisation or mean/std, note}. Registry names are
    CIFAR-sized (32 px, CIFAR-10 mean/std, the CIFAR stem); torchvision: ImageNet's 224 px and mean/std;
    timm: the model's own pretrained config."""
    if name.startswith(TIMM_PREFIX):
        try:
            import timm

            cfg = timm.get_pretrained_cfg(name[len(TIMM_PREFIX):])
            if cfg is not None:
                d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
                size = d.get("input_size", (3, 224, 224))[-1]
                return {"input_size": size, "mean": tuple(d.get("mean", ())), "std": tuple(d.get("std", ())), "normalisation": "model's own", "note": "timm"}
        except ImportError:
            pass
        return {"input_size": 224, "mean": None, "std": None, "normalisation": "imagenet", "note": "timm"}
    if name.startswith(TORCHVISION_PREFIX):
        return {"input_size": 224, "normalisation": "imagenet", "note": "torchvision"}
    return {"input_size": 32, "normalisation": "cifar10", "note": ARCH_NOTES.get(name, "")}


def _drop_last_linear(net: nn.Module) -> tuple[nn.Module, int]:
    """Replace the last nn.Linear of a torchvision classifier (its ImageNet head) by Identity -> (net, its in_features)."""
    last = None
    for name, module in net.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise ValueError(f"{type(net).__name__} has no final nn.Linear to remove; it cannot serve as a feature extractor")
    parent_name, _, child = last.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    dim = getattr(parent, child).in_features
    setattr(parent, child, nn.Identity())
    return net, dim


def _torchvision(name: str) -> tuple[nn.Module, int]:
    """Any torchvision classification model by its builder name, without its classifier: pooled features."""
    if name not in tvm.list_models(module=tvm):
        raise ValueError(f"torchvision has no classification model {name!r}; see torchvision.models.list_models()")
    return _drop_last_linear(tvm.get_model(name, weights=None))


def _timm(name: str) -> tuple[nn.Module, int]:
    """A timm model by name with `num_classes=0` (its pooled features), when timm is installed."""
    try:
        import timm
    except ImportError:
        raise ValueError(f"architecture 'timm:{name}' needs timm: pip install timm") from None
    if not timm.list_models(name):
        raise ValueError(f"timm has no model {name!r}; see timm.list_models()")
    net = timm.create_model(name, pretrained=False, num_classes=0)
    return net, int(net.num_features)


def build_backbone(name: str, cifar_stem: bool = True) -> tuple[nn.Module, int]:
    """Registry name (CIFAR stem optional), `torchvision:NAME` or `timm:NAME` (their own stems) -> (N×3×H×W -> N×D, D)."""
    for prefix, builder in ((TORCHVISION_PREFIX, _torchvision), (TIMM_PREFIX, _timm)):
        if name.startswith(prefix):
            if cifar_stem:
                raise ValueError(f"{name}: the CIFAR stem is only for registry architectures ({', '.join(sorted(ARCHITECTURES))}); "
                                 "use cifar_stem=False (--no-cifar-stem)")
            return builder(name[len(prefix):])
    problem = arch_problem(name)
    if problem:
        raise ValueError(problem)
    return ARCHITECTURES[name](cifar_stem)


def arch_problem(name) -> str | None:
    """None when `name` is a registry architecture or torchvision:NAME / timm:NAME, else what is wrong (with the
    closest registry name): one message for configs, flags and builders."""
    if not isinstance(name, str):
        return f"an architecture is a name, got {name!r}; choose one of {', '.join(sorted(ARCHITECTURES))}"
    if name in ARCHITECTURES or name.startswith((TORCHVISION_PREFIX, TIMM_PREFIX)):
        return None
    import difflib

    close = difflib.get_close_matches(name, list(ARCHITECTURES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"unknown architecture {name!r}{hint}; choose one of {', '.join(sorted(ARCHITECTURES))}, "
            f"or {TORCHVISION_PREFIX}NAME / {TIMM_PREFIX}NAME")


class _ConvBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SmallConvNet(nn.Module):
    """A small CNN for laptop-CPU runs (quickstart, tests): per stage two 3×3 conv-BN-ReLU blocks,
    the first of stages 2+ with stride 2, then global average pooling -> N×widths[-1].
    About 10 MFLOPs per 32×32 image for widths (16, 32, 64), vs about 560 for CIFAR ResNet18."""

    def __init__(self, widths=(32, 64, 128)):
        super().__init__()
        layers, c = [], 3
        for i, w in enumerate(widths):
            layers += [_ConvBlock(c, w, 1 if i == 0 else 2), _ConvBlock(w, w, 1)]
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.pool(self.features(x))


@register("cnn_tiny")
def cnn_tiny(cifar_stem: bool = True):
    return SmallConvNet((16, 32, 64)), 64


@register("cnn_small")
def cnn_small(cifar_stem: bool = True):
    return SmallConvNet((32, 64, 128)), 128
