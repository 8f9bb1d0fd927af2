"""What an EaaS API answers for a batch of images: the encoder's exact fp32 features, optionally
L2-normalised (as the StolenEncoder authors' simulated API and commercial embedding APIs return them),
then the defence. One function, used in-process (`LocalTarget`) and by the HTTP server, so both
answer bitwise alike.

Normalisation comes before any defence: a rounding defence to m decimals or an ε-bounded poisoning
defence then acts on unit vectors, the scale on which Liu et al., "StolenEncoder: Stealing
Pre-trained Encoders in Self-supervised Learning", CCS 2022 (arXiv:2201.05889), Section VII states them.
Shapes: images uint8 N×3×H×W -> float32 N×D.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stealkit.models.encoder import embed


def api_answers(encoder, images: torch.Tensor, *, normalize: bool = False, defence=None, account: str = "anonymous",
                batch_size: int = 512) -> torch.Tensor:
    """Answers as the API returns them: f(x) (fp32, TF32 off, canonical memory layout), then
    f(x)/‖f(x)‖₂ if `normalize`, then `defence(features, images=..., account=...)` if given."""
    feats = embed(encoder, images, batch_size=batch_size)
    if normalize:
        feats = F.normalize(feats, dim=1)
    if defence is not None:
        feats = defence(feats, images=images, account=account)
    return feats.float()
