"""Split BatchNorm: "shuffling BN" of MoCo (He et al., CVPR 2020, Section 3.3) on one device.

MoCo's positive pair is a query q_i and a key k_i of the same image. If both are normalised with
statistics of the same batch, the model can find its positive through the batch statistics instead
of the image ("cheating" the pretext task). With several GPUs MoCo normalises per GPU and shuffles
the keys across GPUs; on one device (as the MoCo CIFAR-10 demo does) every BatchNorm normalises
`splits` sub-batches separately (sub-batch j holds samples j, j+s, j+2s, ...), and the keys are
computed in a shuffled order, so a key's sub-batch is not its query's.

In eval mode a SplitBatchNorm is a plain BatchNorm. Running statistics are the mean of the
sub-batches' (one update per step, as with one BatchNorm). Shapes: N×C(×H×W), N divisible by splits.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SplitBatchNorm(nn.Module):
    """Wraps an existing BatchNorm1d/2d `bn` (same parameters and buffers; their state_dict keys gain
    ".bn" while wrapped) and normalises `splits` sub-batches separately in training mode."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, splits: int):
        super().__init__()
        if splits < 1:
            raise ValueError(f"splits must be >= 1, got {splits}")
        if bn.momentum is None or not bn.track_running_stats:
            raise ValueError("SplitBatchNorm needs a BatchNorm with a momentum and running statistics")
        self.bn, self.splits = bn, splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn, s = self.bn, self.splits
        if not self.training or s == 1:
            return bn(x)
        n, c = x.shape[:2]
        if n % s:
            raise ValueError(f"batch of {n} does not split into {s} equal sub-batches; make batch_size a multiple of {s}")
        channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        # Sample n'·s + j lands in channel block j of row n': block j is sub-batch j.
        xs = x.contiguous().view(n // s, c * s, *x.shape[2:])
        mean, var = bn.running_mean.repeat(s), bn.running_var.repeat(s)
        weight = bn.weight.repeat(s) if bn.weight is not None else None
        bias = bn.bias.repeat(s) if bn.bias is not None else None
        y = F.batch_norm(xs, mean, var, weight, bias, True, bn.momentum, bn.eps).view(x.shape)
        with torch.no_grad():
            bn.running_mean.copy_(mean.view(s, c).mean(0))
            bn.running_var.copy_(var.view(s, c).mean(0))
            bn.num_batches_tracked.add_(1)
        return y.contiguous(memory_format=torch.channels_last) if channels_last else y


def split_batchnorm(module: nn.Module, splits: int) -> nn.Module:
    """Wrap every BatchNorm1d/2d inside `module` (in place) in a SplitBatchNorm; returns `module`."""
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            setattr(module, name, SplitBatchNorm(child, splits))
        elif not isinstance(child, SplitBatchNorm):
            split_batchnorm(child, splits)
    return module


def unsplit_batchnorm(module: nn.Module) -> nn.Module:
    """Undo `split_batchnorm` (in place): the plain BatchNorms come back, with their trained state."""
    for name, child in module.named_children():
        if isinstance(child, SplitBatchNorm):
            setattr(module, name, child.bn)
        else:
            unsplit_batchnorm(child)
    return module
