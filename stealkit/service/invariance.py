"""Can images of different requests share a forward pass without changing any answer's bits?

CPU and GPU kernels may pick another algorithm for another batch size (torch runs a 1-image 3×3
convolution of a small input with its native kernel, and oneDNN for 2 or more images), so a row's
features can depend on how many rows were computed with it, though not (for eval-mode encoders) on
what the other rows hold or where it sits. `batching_mode` checks this on the served encoder at startup:

  "dynamic"  every forward size from 2 to `max_images` gives each row the same bits (checked at
             2, 3, 5, 8 and `max_images`, rows in two orders): forwards of any size ≥ 2, a lone image
             paired with a copy of itself;
  "fixed"    sizes differ, but at one size (`max_images`) a row's bits do not depend on its companions
             or place: every forward is padded to exactly that size;
  "off"      neither: no cross-request batching (each request is answered on its own, as before).
"""

from __future__ import annotations

import torch

from stealkit.targets.answers import api_answers


def _rows(encoder, x: torch.Tensor, normalize: bool) -> torch.Tensor:
    return api_answers(encoder, x, normalize=normalize, batch_size=len(x))


def batching_mode(encoder, input_size: int, max_images: int, normalize: bool = False, seed: int = 0) -> str:
    """'dynamic' | 'fixed' | 'off' for this encoder (see the module docstring); a few small forward passes."""
    if max_images < 2:
        return "off"
    g = torch.Generator().manual_seed(seed)
    probe = torch.randint(0, 256, (max_images + 2, 3, input_size, input_size), dtype=torch.uint8, generator=g)
    ref = _rows(encoder, probe[:2], normalize)
    ok = True
    for n in sorted({2, 3, 5, 8, max_images} & set(range(2, max_images + 1))):
        x = probe[:n]
        same = torch.equal(_rows(encoder, x, normalize)[:2], ref)
        flipped = torch.equal(_rows(encoder, x.flip(0), normalize)[-2:].flip(0), ref)
        if not (same and flipped):
            ok = False
            break
    if ok:
        return "dynamic"
    x = probe[:max_images]
    base = _rows(encoder, x, normalize)
    other = torch.cat([probe[max_images:max_images + 2], x[2:]]).flip(0)  # rows 2.. elsewhere, other companions
    if torch.equal(_rows(encoder, other, normalize)[: max_images - 2].flip(0), base[2:]):
        return "fixed"
    return "off"
