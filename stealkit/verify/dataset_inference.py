"""Dataset inference for encoders (Dziedzic, Duan, Kaleem, Dhawan, Guan, Cattan, Boenisch, Papernot,
"Dataset Inference for Self-Supervised Models", NeurIPS 2022, arXiv:2209.09024; released code
cleverhans-lab/DatasetInferenceForSelfSupervisedModels, `dataset-inference/gmm.py`).

The victim's private training set is its signature. The defender
1. splits its private training images into a fit part and an evaluation part,
2. fits a Gaussian mixture (sklearn) on the *suspect's* L2-normalised representations of the fit part,
3. scores with it the suspect's representations of the evaluation part ("train") and of held-out
   images of the same distribution that no encoder was trained on ("test"),
4. runs a one-sided t-test, H1: mean log-likelihood(train) > mean log-likelihood(test).
A p-value below `alpha` (the blog's 1%) marks the suspect as the victim or a copy of it; otherwise the
test is inconclusive and the suspect is called independent.

Defaults are the released script's: the mixture fitted on the suspect (`fit_on="suspect"`; "victim"
fits it on the victim's representations instead, which needs both to have the same width), every
representation taken of a RandomResizedCrop view of its image (`views="crop"`; "none": the image as
is), 20 components with diagonal covariances (the released code at ImageNet scale; `covariance_type`
is a setting), Student's t-test with pooled variance as `scipy.stats.ttest_ind` computes it (`test=
"student"`; "welch" drops the equal-variance assumption). The result names the variant that ran.
Shapes: images uint8 N×3×H×W; encoders N×3×H×W -> N×D.
An encoder argument may be an nn.Module or anything with `embed(images)` (a Target; queries are billed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class DatasetInferenceResult:
    p_value: float
    t_statistic: float
    stolen: bool  # p_value < alpha: the suspect is the victim or derived from it
    alpha: float
    mean_ll_train: float  # mean log-likelihood of the suspect's private-train evaluation representations
    mean_ll_test: float  # ... of its held-out (public/test) representations
    n_fit: int
    n_train: int
    n_test: int
    fit_on: str
    n_components: int
    covariance_type: str = "diag"
    views: str = "crop"
    test: str = "student"

    @property
    def variant(self) -> str:
        fitted = f"{self.n_fit} private images" if self.n_fit >= 0 else "private images"
        return (f"GMM({self.n_components}, {self.covariance_type}) fitted on the {self.fit_on}'s representations of "
                f"{fitted} ({'RandomResizedCrop views' if self.views == 'crop' else 'plain images'}), "
                f"{'Student' if self.test == 'student' else 'Welch'} t-test, one-sided")

    @property
    def verdict(self) -> str:
        return "stolen (victim or a copy of it)" if self.stolen else "independent (inconclusive test)"

    def to_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict, "variant": self.variant}


def representations(model, images: torch.Tensor, batch_size: int = 512, normalize: bool = True, fast: bool = False) -> np.ndarray:
    """float64 N×D representations of uint8 images from an encoder (nn.Module) or a Target (`embed`).
    fast=True (a local encoder only): bf16 autocast and channels-last where the hardware has them (models.encoder.embed)."""
    if isinstance(model, torch.nn.Module):
        from stealkit.models.encoder import embed

        feats = embed(model, images, batch_size=batch_size, amp=fast, fast=fast)
    else:
        feats = torch.cat([model.embed(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    feats = feats.float()
    if normalize:
        feats = F.normalize(feats, dim=1)
    return feats.double().numpy()


def fit_gmm(reps: np.ndarray, n_components: int = 10, covariance_type: str = "diag", seed: int = 0, max_iter: int = 1000):
    """sklearn GaussianMixture fitted on N×D representations (diag covariances as in the released code)."""
    from sklearn.mixture import GaussianMixture

    k = min(n_components, len(reps))
    return GaussianMixture(n_components=k, covariance_type=covariance_type, max_iter=max_iter, random_state=seed, reg_covar=1e-6).fit(reps)


def welch_greater(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """One-sided Welch t-test, H1: mean(a) > mean(b) -> (t, p)."""
    return t_greater(a, b, equal_var=False)


def t_greater(a: np.ndarray, b: np.ndarray, equal_var: bool = True) -> tuple[float, float]:
    """One-sided two-sample t-test, H1: mean(a) > mean(b) -> (t, p); pooled variance (Student) by default."""
    from scipy.stats import ttest_ind

    res = ttest_ind(a, b, equal_var=equal_var, alternative="greater")
    return float(res.statistic), float(res.pvalue)


def crop_views(images: torch.Tensor, seed: int) -> torch.Tensor:
    """One RandomResizedCrop view (scale 0.08–1, ratio 3/4–4/3, back to the same size) of every uint8 image,
    drawn from `seed` (the released script's `transforms.RandomResizedCrop`)."""
    from stealkit.augment_ops import random_resized_crop, to_uint8

    with torch.random.fork_rng(devices=[]):  # the caller's global generator is left as it was
        torch.manual_seed(seed)
        views = torch.cat([random_resized_crop(images[i : i + 4096].float() / 255.0, images.shape[-1], scale=(0.08, 1.0))
                           for i in range(0, len(images), 4096)])
    return to_uint8(views)


def dataset_inference(
    victim,
    suspect,
    private_images: torch.Tensor,
    public_images: torch.Tensor,
    *,
    fit_fraction: float = 0.5,
    n_components: int = 20,
    covariance_type: Literal["diag", "full", "spherical", "tied"] = "diag",
    fit_on: Literal["victim", "suspect"] = "suspect",
    normalize: bool = True,
    views: Literal["crop", "none"] = "crop",
    test: Literal["student", "welch"] = "student",
    alpha: float = 0.01,
    seed: int = 0,
    batch_size: int = 512,
    gmm_cache: dict | None = None,
    fast: bool = False,
) -> DatasetInferenceResult:
    """Is `suspect` the victim or stolen from it? private_images: the victim's training images (uint8
    N×3×H×W); public_images: held-out images of the same distribution (M×3×H×W) -> DatasetInferenceResult.
    gmm_cache: a dict kept by the caller to reuse the victim's fitted mixture across suspects (fit_on="victim";
    reused only for the very same victim and private-image objects and the same mixture settings).
    fast: embed local encoders with bf16 autocast where the hardware has it (representations())."""
    if not 0 < fit_fraction < 1:
        raise ValueError(f"fit_fraction must be in (0, 1), got {fit_fraction}")
    if fit_on not in ("victim", "suspect"):
        raise ValueError(f"fit_on must be 'victim' or 'suspect', got {fit_on!r}")
    if fit_on == "victim" and victim is None:
        raise ValueError("fit_on='victim' needs the victim encoder")
    if views not in ("crop", "none") or test not in ("student", "welch"):
        raise ValueError(f"views must be 'crop' or 'none' and test 'student' or 'welch', got {views!r}, {test!r}")
    n = len(private_images)
    n_fit = int(round(n * fit_fraction))
    if n_fit < 2 or n - n_fit < 2 or len(public_images) < 2:
        raise ValueError(f"need at least 2 images in each of fit/train/test; got {n_fit}/{n - n_fit}/{len(public_images)}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    fit_imgs, train_imgs = private_images[perm[:n_fit]], private_images[perm[n_fit:]]
    if views == "crop":  # one view per image, drawn per set from the seed (the same views for every suspect)
        fit_imgs, train_imgs = crop_views(fit_imgs, seed), crop_views(train_imgs, seed + 1)
        public_images = crop_views(public_images, seed + 2)
    fitter = victim if fit_on == "victim" else suspect
    # The entry keeps the victim and the image tensor alive and is checked by identity: an id() alone can be
    # reused by a new object once the old one is freed (e.g. a fresh slice `private[:n]` per call), which
    # would silently score the suspect under a mixture fitted on other images.
    key = (id(victim), id(private_images), n_fit, seed, n_components, covariance_type, normalize, views)
    hit = gmm_cache.get(key) if fit_on == "victim" and gmm_cache is not None else None
    if hit is not None and hit[0] is victim and hit[1] is private_images:
        gmm = hit[2]
    else:
        gmm = fit_gmm(representations(fitter, fit_imgs, batch_size, normalize, fast), n_components, covariance_type, seed)
        if fit_on == "victim" and gmm_cache is not None:
            gmm_cache[key] = (victim, private_images, gmm)
    return dataset_inference_reps(None, representations(suspect, train_imgs, batch_size, normalize, fast),
                                  representations(suspect, public_images, batch_size, normalize, fast), gmm=gmm,
                                  covariance_type=covariance_type, fit_on=fit_on, views=views, test=test, alpha=alpha,
                                  n_fit=n_fit)


def dataset_inference_reps(
    fit_reps: np.ndarray | None,
    train_reps: np.ndarray,
    test_reps: np.ndarray,
    *,
    n_components: int = 20,
    covariance_type: str = "diag",
    fit_on: str = "suspect",
    views: str = "crop",
    test: str = "student",
    alpha: float = 0.01,
    seed: int = 0,
    gmm=None,
    n_fit: int | None = None,
) -> DatasetInferenceResult:
    """The test on representations already computed (float N×D, normalised as wanted): fit a GMM on
    `fit_reps` (or use the fitted `gmm`), score `train_reps` (private images held out from the fit) and
    `test_reps` (public images), one-sided t-test. Lets a caller embed each image once and rerun the test
    at many sample sizes (benchmarks/dataset_inference_real.py)."""
    if test not in ("student", "welch"):
        raise ValueError(f"test must be 'student' or 'welch', got {test!r}")
    if gmm is None:
        if fit_reps is None or len(fit_reps) < 2:
            raise ValueError("give at least 2 representations to fit the mixture on, or a fitted gmm")
        gmm = fit_gmm(fit_reps, n_components, covariance_type, seed)
        n_fit = len(fit_reps)
    if len(train_reps) < 2 or len(test_reps) < 2:
        raise ValueError(f"need at least 2 private and 2 public representations; got {len(train_reps)}/{len(test_reps)}")
    ll_train = gmm.score_samples(train_reps)
    ll_test = gmm.score_samples(test_reps)
    t, p = t_greater(ll_train, ll_test, equal_var=test == "student")
    if not np.isfinite(p):  # identical constant likelihoods: no evidence
        p = 1.0
    return DatasetInferenceResult(
        p_value=p,
        t_statistic=t,
        stolen=bool(p < alpha),
        alpha=alpha,
        mean_ll_train=float(np.mean(ll_train)),
        mean_ll_test=float(np.mean(ll_test)),
        n_fit=int(n_fit if n_fit is not None else -1),
        n_train=len(train_reps),
        n_test=len(test_reps),
        fit_on=fit_on,
        n_components=gmm.n_components,
        covariance_type=covariance_type,
        views=views,
        test=test,
    )
