"""View alignment: how close an encoder maps augmented views of one image, a membership signal of
contrastive encoders (Liu, Jia, Qu, Gong, "EncoderMI: Membership Inference against Pre-trained Encoders in
Contrastive Learning", ACM CCS 2021, arXiv:2108.11023, Section 4). A contrastive encoder is trained to pull
together the views of its training images, so it aligns them better than those of images it never saw.

stealkit uses it as the per-image score of dataset inference (`dataset_inference(score="alignment")`): the
suspect's mean alignment on private training images against public images of the same distribution, one-sided
t-test, no mixture to fit. A copy that imitates the victim's answers may inherit that alignment; an
independent encoder has no reason to align private images better than public ones.

Shapes: images uint8 N×3×H×W -> scores float64 N (mean pairwise cosine over `views` views, in [-1, 1]).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

SIMCLR_VIEWS = "crop+flip+jitter+gray"  # the shared victim's training augmentations (its MANIFEST.json)


def augmented_views(images: torch.Tensor, views: int, augment: str = SIMCLR_VIEWS, seed: int = 0) -> torch.Tensor:
    """`views` independent draws of the augmentation of every image, from `seed` -> uint8 V×N×3×H×W
    (the same draws for every suspect, so suspects are scored on identical inputs)."""
    from stealkit.augment import Augmenter
    from stealkit.augment_ops import to_uint8

    if views < 2:
        raise ValueError(f"view alignment needs at least 2 views per image, got {views}")
    aug = Augmenter(augment, images.shape[-1])
    with torch.random.fork_rng(devices=[]):  # the caller's global generator is left as it was
        torch.manual_seed(seed)
        return torch.stack([to_uint8(aug.apply_all(images)) for _ in range(views)])


def pairwise_alignment(reps: torch.Tensor) -> np.ndarray:
    """V×N×D representations -> N mean cosine over the V(V-1)/2 pairs of views of each image (float64)."""
    v = reps.shape[0]
    z = F.normalize(reps.double(), dim=-1)  # a zero vector stays zero: its cosines count as 0
    s = z.sum(0)  # N×D: Σ_v z_v; Σ_{a≠b} <z_a, z_b> = |Σ z|² − Σ |z_v|²
    return ((s * s).sum(-1) - (z * z).sum(-1).sum(0)).div(v * (v - 1)).numpy()


def view_alignment(model, view_images: torch.Tensor, batch_size: int = 512, fast: bool = False) -> np.ndarray:
    """Mean pairwise cosine of `model`'s representations of V×N×3×H×W views -> N scores (float64)."""
    from stealkit.verify.dataset_inference import representations

    v, n = view_images.shape[:2]
    flat = view_images.reshape(v * n, *view_images.shape[2:])
    reps = torch.from_numpy(representations(model, flat, batch_size, normalize=True, fast=fast)).reshape(v, n, -1)
    return pairwise_alignment(reps)


@dataclass
class AlignmentTestResult:
    p_value: float
    t_statistic: float
    stolen: bool  # p_value < alpha: the suspect aligns the private images' views better than public ones
    alpha: float
    mean_private: float  # mean view alignment over the private images
    mean_public: float
    n_private: int
    n_public: int
    views: int
    augment: str

    @property
    def verdict(self) -> str:
        return "stolen (victim or a copy of it)" if self.stolen else "independent (inconclusive test)"

    @property
    def variant(self) -> str:
        return (f"view alignment ({self.views} views of {self.augment}), mean pairwise cosine per image, "
                f"Student t-test, one-sided")

    def to_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict, "variant": self.variant}


def alignment_test(suspect, private_images: torch.Tensor, public_images: torch.Tensor, *, views: int = 4,
                   augment: str = SIMCLR_VIEWS, alpha: float = 0.01, seed: int = 0, batch_size: int = 512,
                   fast: bool = False) -> AlignmentTestResult:
    """Does `suspect` align the views of the victim's private images (uint8 N×3×H×W) better than those of
    public images of the same distribution (M×3×H×W)? One-sided Student t-test over per-image scores.
    Embeds views·(N+M) images (billed queries when the suspect is a Target)."""
    if len(private_images) < 2 or len(public_images) < 2:
        raise ValueError(f"need at least 2 private and 2 public images; got {len(private_images)}/{len(public_images)}")
    a = view_alignment(suspect, augmented_views(private_images, views, augment, seed), batch_size, fast)
    b = view_alignment(suspect, augmented_views(public_images, views, augment, seed + 1), batch_size, fast)
    return alignment_scores_test(a, b, alpha=alpha, views=views, augment=augment)


def alignment_scores_test(private_scores: np.ndarray, public_scores: np.ndarray, *, alpha: float = 0.01, views: int = 4,
                          augment: str = SIMCLR_VIEWS) -> AlignmentTestResult:
    """The one-sided t-test on per-image alignment scores already computed (N and M floats)."""
    from stealkit.verify.dataset_inference import t_greater

    a, b = np.asarray(private_scores, dtype=np.float64), np.asarray(public_scores, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 private and 2 public scores; got {len(a)}/{len(b)}")
    t, p = t_greater(a, b)
    if not np.isfinite(p):  # constant scores: no evidence
        t, p = 0.0, 1.0
    return AlignmentTestResult(p_value=p, t_statistic=t, stolen=bool(p < alpha), alpha=alpha, mean_private=float(a.mean()),
                               mean_public=float(b.mean()), n_private=len(a), n_public=len(b), views=views, augment=augment)
