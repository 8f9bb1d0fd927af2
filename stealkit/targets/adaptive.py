"""What an adaptive thief does to the answers before training on them (issue "A defence that spares honest
users"; the adaptive attackers of B4B, Dubiński et al., NeurIPS 2023, arXiv:2310.08571, Section 5, and of
StolenEncoder's poisoning, Liu et al., CCS 2022, arXiv:2201.05889, Section VII):

- `AveragingTarget`: ask every image `repeats` times, each through its own Target (e.g. one RemoteTarget per
  repeat, each with its own answer cache, so a resumed run never pays a repeat twice), and return the mean.
  Against noise drawn afresh per call this divides the noise's std by √repeats; it bills repeats·N queries.
- `NormalisingTarget`: L2-normalise every answer (against a defence that changes the answer's length).
- `OfflineTarget`: the answers were paid for and cached earlier; asking it anything is a bug.
- `recentred`: answers minus their mean over the thief's own queries, L2-normalised (against B4B's per-account
  maps y = xA + B: the mean removes B exactly, which otherwise dominates every answer, and what remains,
  (x - x̄)A, is a linear image of the victim's centred features that a stolen encoder can learn).

Shapes: images uint8 N×3×H×W -> float32 N×D.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stealkit.targets.base import BudgetExceeded, Target


class AveragingTarget(Target):
    """The mean answer over `targets` (one per repeat); billed: what every repeat billed."""

    def __init__(self, targets: list[Target], budget: int | None = None):
        if not targets:
            raise ValueError("AveragingTarget needs at least one target (one per repeat)")
        super().__init__(budget)
        self.targets = list(targets)

    @property
    def feature_dim(self) -> int:
        return self.targets[0].feature_dim

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        if self.budget is not None and self.queries + len(images) * len(self.targets) > self.budget:
            raise BudgetExceeded(f"{len(images)} images × {len(self.targets)} repeats would pass the budget of {self.budget} "
                                 f"({self.queries} spent); nothing was asked")
        before = sum(t.queries for t in self.targets)
        out = torch.stack([t.embed(images).float() for t in self.targets]).mean(0)
        self.queries += sum(t.queries for t in self.targets) - before
        return out

    def _embed(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - embed is overridden
        raise NotImplementedError


class NormalisingTarget(Target):
    """`target`'s answers, each divided by its L2 norm; billed as `target` bills."""

    def __init__(self, target: Target):
        super().__init__(None)
        self.target = target

    @property
    def feature_dim(self) -> int:
        return self.target.feature_dim

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        before = self.target.queries
        out = F.normalize(self.target.embed(images).float(), dim=1)
        self.queries += self.target.queries - before
        return out

    def _embed(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - embed is overridden
        raise NotImplementedError


class OfflineTarget(Target):
    """Stands in for a target whose answers are already cached (the API may be down): only its width is known."""

    def __init__(self, feature_dim: int):
        super().__init__(None)
        self._dim = feature_dim

    @property
    def feature_dim(self) -> int:
        return self._dim

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(f"OfflineTarget asked for {len(images)} answers: they should have been cached before the API went away")


def nudged(images: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Near-duplicates: pixel (0, 0, 0) of image i moved by times[i] (mod 256), so each re-ask is a distinct image."""
    out = images.clone()
    out[:, 0, 0, 0] = ((out[:, 0, 0, 0].long() + times) % 256).to(torch.uint8)
    return out


def diluted_queries(target: Target, images: torch.Tensor, repeats_per_new: float, chunk: int = 256,
                    nudge: bool = False) -> tuple[torch.Tensor, int]:
    """The diluting thief against a coverage-rate defence: after each chunk of new images it re-asks
    round(repeats_per_new · chunk) images it asked before, least recently asked first, so that its queries cover
    buckets more slowly than a sweep; every image keeps the answer it got last (asked when the account's rate
    was lowest so far). With `nudge` each re-ask is a near-duplicate (one pixel moved by the number of times
    the image was asked before): a distinct image for a defence that ignores exact repeats (sticky answers), in
    the buckets the original already hit. `target` must send repeats as new requests (no answer cache).
    images uint8 N×3×H×W -> (answers float32 N×D, queries billed)."""
    n = len(images)
    answers: torch.Tensor | None = None
    last = torch.full((n,), -1, dtype=torch.long)  # the step at which each image was last asked
    asks = torch.zeros(n, dtype=torch.long)  # how many times each image was asked
    step, before = 0, target.queries
    for start in range(0, n, chunk):
        new = torch.arange(start, min(start + chunk, n))
        batches = [new]
        k = round(repeats_per_new * len(new))
        if start and k:
            asked = torch.arange(start)
            order = asked[torch.argsort(last[asked], stable=True)]  # least recently asked first
            batches.append(order[torch.arange(k) % len(order)])
        for j, idx in enumerate(batches):
            for sub in torch.split(idx, chunk):
                batch = images[sub].contiguous()
                if nudge and j > 0:
                    batch = nudged(batch, asks[sub])
                out = target.embed(batch).float()
                if answers is None:
                    answers = torch.zeros(n, out.shape[1])
                answers[sub] = out
                step += 1
                last[sub] = step
                asks[sub] += 1
    return (answers if answers is not None else torch.zeros(0, target.feature_dim)), target.queries - before


def recentred(features: torch.Tensor) -> torch.Tensor:
    """N×D answers -> N×D: each minus the mean answer of the N, then L2-normalised (no query)."""
    f = features.float()
    return F.normalize(f - f.mean(dim=0, keepdim=True), dim=1)
