"""Key maps from other libraries' state-dict names to an architecture's own (`stealkit import --key-map`).

`efficientnet_pytorch`: the `efficientnet_pytorch` / `efficientnet-lite-pytorch` layout (`_conv_stem`,
`_bn0`, `_blocks.N._expand_conv`, ..., `_conv_head`, `_bn1`, `_fc`) onto timm's EfficientNet
(`timm:tf_efficientnet_lite0` and relatives: `conv_stem`, `bn1`, `blocks.S.B.conv_pw`, ..., `conv_head`,
`bn2`, `classifier`). Both register their tensors in the same order (stem, blocks in order and, inside a
block, expand conv, BN, depthwise conv, BN, (SE), projection conv, BN; then the head), so the map pairs
them in order and checks every pair: the same shape and the same kind of tensor (weight, bias,
running_mean, ...). Any mismatch is an error naming the pair, so a wrong architecture cannot load silently.
"""

from __future__ import annotations

import torch


class KeyMapError(ValueError):
    pass


def by_order(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], drop: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Rename `state`'s tensors to `own`'s names, pairing them in order (after dropping keys under `drop`)."""
    given = [(k, v) for k, v in state.items() if not k.startswith(drop)]
    if len(given) != len(own):
        raise KeyMapError(f"the weights have {len(given)} tensors (after leaving out {list(drop) or 'nothing'}), "
                          f"the architecture {len(own)}: they are not the same network")
    out = {}
    for (k_src, v), (k_dst, ref) in zip(given, own.items()):
        kind_src, kind_dst = k_src.rsplit(".", 1)[-1], k_dst.rsplit(".", 1)[-1]
        if tuple(v.shape) != tuple(ref.shape) or kind_src != kind_dst:
            raise KeyMapError(f"{k_src} {tuple(v.shape)} does not pair with {k_dst} {tuple(ref.shape)}: not the same network")
        out[k_dst] = v
    return out


def efficientnet_pytorch(state, own):
    """efficientnet_pytorch names -> timm EfficientNet names (the classifier `_fc` left out unless the
    architecture has one)."""
    has_classifier = any(k.startswith("classifier.") for k in own)
    return by_order(state, own, () if has_classifier else ("_fc.",))


KEY_MAPS = {"efficientnet_pytorch": efficientnet_pytorch}
