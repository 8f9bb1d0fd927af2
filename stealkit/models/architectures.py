"""Backbone registry: torchvision architectures with a CIFAR stem for 32×32 inputs.

CIFAR stem (as in the SimCLR/StolenEncoder code): the first convolution becomes 3×3, stride 1,
padding 1, and the first max-pool is removed, so a 32×32 image keeps its resolution through the
stem. Every builder returns (backbone, feature_dim) where backbone maps N×3×H×W floats to N×D.
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


def build_backbone(name: str, cifar_stem: bool = True) -> tuple[nn.Module, int]:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](cifar_stem)


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
