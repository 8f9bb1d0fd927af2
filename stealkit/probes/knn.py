"""Weighted kNN classifier on L2-normalised features (the InstDisc / SimCLR kNN monitor).

Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination" (CVPR'18),
as used to monitor SimCLR/MoCo pre-training: cosine similarity to every training feature, the k
most similar vote for their label with weight exp(sim / T); defaults k=200, T=0.1. No training,
so it is a cheap check beside the paper's MLP classifier (StolenEncoder, Section V-A 3).

Similarities are computed for chunks of test rows (chunk × N_train at most `max_elements`), so a
50k×10k problem never holds the whole similarity matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from stealkit.probes.mlp import ProbeConfig


class KNNConfig(ProbeConfig):
    k: int = Field(200, ge=1)
    temperature: float = Field(0.1, gt=0)
    max_elements: int = Field(1 << 25, ge=1)  # similarities computed in chunks of at most this many

    @model_validator(mode="before")
    @classmethod
    def _alias(cls, data):
        if isinstance(data, dict) and "T" in data:  # the InstDisc code's name for the temperature
            data = {**data, "temperature": data["T"]}
            data.pop("T")
        return data


@torch.no_grad()
def knn_predict(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                k: int = 200, temperature: float = 0.1, num_classes: int | None = None,
                device: torch.device | str | None = None, max_elements: int = 1 << 25,
                return_scores: bool = False):
    """train N×D, labels N, test M×D -> predicted labels int64 M (CPU); with return_scores also M×C scores.

    Ties in the class score go to the lowest class index (argmax); k is clipped to N.
    """
    from stealkit.runtime import pick_device

    device = pick_device(None if device is None else str(device))
    if train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(f"train features have D={train_feats.shape[1]}, test D={test_feats.shape[1]}")
    if num_classes is None:
        num_classes = int(train_labels.max()) + 1
    bank = F.normalize(train_feats.to(device, torch.float32), dim=1)
    labels = train_labels.to(device, torch.long)
    k = min(int(k), len(bank))
    chunk = max(1, int(max_elements) // max(1, len(bank)))
    preds, scores_all = [], []
    for s in range(0, len(test_feats), chunk):
        q = F.normalize(test_feats[s : s + chunk].to(device, torch.float32), dim=1)
        sim = q @ bank.T  # chunk×N cosine similarities
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        scores = torch.zeros(len(q), num_classes, device=device).scatter_add_(1, labels[top_idx], weights)
        preds.append(scores.argmax(1).cpu())
        if return_scores:
            scores_all.append(scores.cpu())
    pred = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)
    if return_scores:
        return pred, (torch.cat(scores_all) if scores_all else torch.zeros(0, num_classes))
    return pred


def knn_accuracy(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 test_labels: torch.Tensor, k: int = 200, T: float = 0.1, num_classes: int | None = None,
                 device: torch.device | str | None = None, max_elements: int = 1 << 25) -> float:
    """Test accuracy in [0, 1] of the weighted kNN classifier (see `knn_predict`)."""
    pred = knn_predict(train_feats, train_labels, test_feats, k, T, num_classes, device, max_elements)
    return float((pred == test_labels.cpu().long()).float().mean()) if len(pred) else float("nan")
