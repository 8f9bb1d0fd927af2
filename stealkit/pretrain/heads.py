"""Projection heads for contrastive pre-training (SimCLR: Chen et al. 2020; MoCo v2: Chen et al. 2020)."""

import torch.nn as nn


def projection_head(in_dim: int, hidden: int = 512, out_dim: int = 128) -> nn.Module:
    """N×in_dim -> N×out_dim: Linear-BN-ReLU-Linear (the SimCLR CIFAR code's g(·))."""
    return nn.Sequential(nn.Linear(in_dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))
