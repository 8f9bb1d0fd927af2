"""Dataset inference calibrated against reference encoders (a per-image control for a split shift).

The released dataset-inference test (Dziedzic et al., NeurIPS 2022, arXiv:2209.09024; `dataset_inference.py`)
compares a suspect's GMM log-likelihoods of private and public images. If the two image sets differ in a way
every encoder sees (a split shift), an encoder that never saw the private set can pass the test. The control
here scores the *same* images under reference encoders chosen before the test and subtracts their scores:

    z_E(x)  = (s_E(x) - mean s_E(fit)) / sd s_E(fit)        each encoder's scores standardised on its own fit set
    c_S(x)  = z_S(x) - mean_R z_R(x)                         the suspect's score less the references' (same image)
    test    one-sided t-test, H1: mean c_S(private) > mean c_S(public)   (`calibrated_test`)

`calibrated_test` treats images as the only random unit: it is exact when the references remove the split
shift image by image, and over-confident when encoders differ in how strongly they see it. `encoder_level_test`
is the test on the encoder as the unit: is the suspect's split effect d_S = mean z_S(private) - mean z_S(public)
above those of k reference encoders, by a one-sided t prediction bound, t = (d_S - mean d_R) / (sd d_R sqrt(1 + 1/k))
on k - 1 degrees of freedom. Pure numpy/scipy; arrays are 1-D per encoder, K×N for K references.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def standardise(scores: np.ndarray, fit_scores: np.ndarray) -> np.ndarray:
    """Scores in units of the fit set's scores: (scores - mean(fit)) / sd(fit) (sd with ddof=1)."""
    fit_scores = np.asarray(fit_scores, dtype=np.float64)
    sd = fit_scores.std(ddof=1)
    if not np.isfinite(sd) or sd <= 0:
        raise ValueError("the fit scores need a positive, finite standard deviation")
    return (np.asarray(scores, dtype=np.float64) - fit_scores.mean()) / sd


def calibrated_scores(z_suspect: np.ndarray, z_references: np.ndarray) -> np.ndarray:
    """Per-image calibrated scores: the suspect's standardised score less the mean of the references' on the
    same image. z_suspect N, z_references K×N (or N for one reference) -> N."""
    z_suspect = np.asarray(z_suspect, dtype=np.float64)
    refs = np.atleast_2d(np.asarray(z_references, dtype=np.float64))
    if refs.shape[1] != len(z_suspect) or len(refs) == 0:
        raise ValueError(f"references must be K×{len(z_suspect)} with K >= 1, got {refs.shape}")
    return z_suspect - refs.mean(axis=0)


@dataclass
class CalibratedResult:
    p_value: float
    t_statistic: float
    stolen: bool  # p_value < alpha
    alpha: float
    delta: float  # mean calibrated score, private - public
    delta_suspect: float  # the suspect's own standardised split effect, private - public
    delta_references: float  # the references' mean standardised split effect, private - public
    n_private: int
    n_public: int
    n_references: int
    test: str = "welch"

    def to_dict(self) -> dict:
        return asdict(self)


def calibrated_test(z_private: np.ndarray, z_public: np.ndarray, refs_private: np.ndarray, refs_public: np.ndarray,
                    alpha: float = 0.01, test: str = "welch") -> CalibratedResult:
    """One-sided two-sample t-test (Welch by default, "student": pooled variance) that the calibrated score is
    higher on private than on public images. z_*: the suspect's standardised scores (N private, M public);
    refs_*: the references' on the same images (K×N, K×M)."""
    from stealkit.verify.dataset_inference import t_greater

    if test not in ("welch", "student"):
        raise ValueError(f"test must be 'welch' or 'student', got {test!r}")
    cp, cq = calibrated_scores(z_private, refs_private), calibrated_scores(z_public, refs_public)
    if len(cp) < 2 or len(cq) < 2:
        raise ValueError(f"need at least 2 private and 2 public scores; got {len(cp)}/{len(cq)}")
    t, p = t_greater(cp, cq, equal_var=test == "student")
    if not np.isfinite(p):  # constant calibrated scores: no evidence
        p = 1.0
    rp, rq = np.atleast_2d(refs_private), np.atleast_2d(refs_public)
    return CalibratedResult(p_value=p, t_statistic=t, stolen=bool(p < alpha), alpha=alpha, delta=float(cp.mean() - cq.mean()),
                            delta_suspect=float(np.mean(z_private) - np.mean(z_public)),
                            delta_references=float(rp.mean() - rq.mean()), n_private=len(cp), n_public=len(cq),
                            n_references=len(rp), test=test)


def encoder_level_test(d_suspect: float, d_references, alpha: float = 0.01) -> dict:
    """Is the suspect's split effect above the reference encoders'? One-sided t prediction test with the
    encoder as the unit: t = (d_S - mean d_R) / (sd d_R * sqrt(1 + 1/k)), p = P(T_{k-1} >= t) -> dict."""
    from scipy.stats import t as student_t

    d = np.asarray(d_references, dtype=np.float64)
    k = len(d)
    if k < 2:
        raise ValueError(f"need at least 2 reference encoders, got {k}")
    sd = d.std(ddof=1)
    gap = float(d_suspect - d.mean())
    if sd > 0:
        t = gap / (sd * np.sqrt(1 + 1 / k))
        p = float(student_t.sf(t, k - 1))
    else:  # identical references: any excess is infinitely surprising
        t = float(np.sign(gap)) * float("inf") if gap else 0.0
        p = 0.0 if gap > 0 else (1.0 if gap < 0 else 0.5)
    return {"p_value": p, "t_statistic": t, "stolen": bool(p < alpha), "alpha": alpha, "d_suspect": float(d_suspect),
            "d_references_mean": float(d.mean()), "d_references_sd": float(sd), "n_references": k, "df": k - 1}
