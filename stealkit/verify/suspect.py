"""One ownership check of a suspect encoder, every test the victim supports, one verdict: what
`stealkit verify --victim V --suspect S` runs.

Tests (each a one-sided test whose H1 is "the suspect is the victim or derived from it"):
- dataset inference, the released GMM protocol (Dziedzic et al., NeurIPS 2022, arXiv:2209.09024;
  verify/dataset_inference.py);
- view alignment on the same private/public images (EncoderMI's score, Liu et al., CCS 2021,
  arXiv:2108.11023; verify/alignment.py), which finds the shared real victim's own gap where the GMM
  test does not (weakly: thousands of images; neither test flags copies stolen from it, README);
- the rotation watermark, when the victim carries one (a .wmhead.safetensors beside its checkpoint;
  Dziedzic et al., ICML 2022, arXiv:2205.07890; verify/watermark.py).
The verdict is "stolen" when any test's p-value is below alpha / (number of tests run) (Bonferroni: the
chance of a false accusation stays below alpha however many tests run). The suspect may be a checkpoint
or a served API (a Target): then every image it embeds is a billed query, counted per test and priced.
Shapes: images uint8 N×3×H×W.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch


@dataclass
class SuspectReport:
    tests: dict[str, dict] = field(default_factory=dict)  # name -> result dict (+ "queries", "seconds")
    alpha: float = 0.01
    price_per_1000: float | None = None
    bf16: bool = False  # a local suspect was embedded with bf16 autocast

    @property
    def threshold(self) -> float:
        return self.alpha / max(1, len(self.tests))

    @property
    def stolen(self) -> bool:
        return any(t["p_value"] < self.threshold for t in self.tests.values())

    @property
    def queries(self) -> int:
        return sum(t["queries"] for t in self.tests.values())

    @property
    def cost(self) -> float | None:
        return None if self.price_per_1000 is None else self.queries * self.price_per_1000 / 1000.0

    @property
    def verdict(self) -> str:
        if self.stolen:
            return "stolen: the suspect is the victim or derived from it"
        return "not shown to be stolen (no test below the threshold)"

    def to_dict(self) -> dict:
        return {"tests": self.tests, "alpha": self.alpha, "threshold": self.threshold, "stolen": self.stolen,
                "verdict": self.verdict, "queries": self.queries, "price_per_1000": self.price_per_1000, "cost": self.cost, "bf16": self.bf16}


def _counted(suspect, run):
    """Run `run()`; how many billed queries the suspect answered meanwhile (0 for a local encoder), and seconds."""
    before = getattr(suspect, "queries", None)
    t0 = time.perf_counter()
    out = run()
    spent = (suspect.queries - before) if isinstance(before, int) else 0
    return out, spent, time.perf_counter() - t0


def verify_suspect(victim, suspect, private_images, public_images, *, watermark_head=None, watermark_images=None,
                   alpha: float = 0.01, views: int = 4, components: int = 20, seed: int = 0,
                   price_per_1000: float | None = None, tests: tuple[str, ...] = ("dataset_inference", "alignment"),
                   fast: bool = False) -> SuspectReport:
    """Every applicable test on one suspect -> SuspectReport. private_images: victim's training images;
    public_images: same distribution, never trained on; watermark_head/images: the victim's rotation head and
    the images to rotate (the watermark test runs only when both are given). fast: a local suspect embeds with bf16
    autocast where the hardware has it (an API suspect answers as it does)."""
    from stealkit.verify.alignment import alignment_test
    from stealkit.verify.dataset_inference import dataset_inference
    from stealkit.verify.watermark import watermark_accuracy

    unknown = set(tests) - {"dataset_inference", "alignment"}
    if unknown:
        raise ValueError(f"unknown tests {sorted(unknown)}; choose from dataset_inference, alignment")
    watermark = watermark_head is not None and watermark_images is not None
    from stealkit.runtime import bf16_enabled

    local = isinstance(suspect, torch.nn.Module)
    bf16 = bool(fast and local and bf16_enabled(next(suspect.parameters()).device))
    report = SuspectReport(alpha=alpha, price_per_1000=price_per_1000, bf16=bf16)
    each = alpha / (len(set(tests)) + int(watermark))  # every test's own verdict at the Bonferroni threshold
    if "dataset_inference" in tests:
        r, q, s = _counted(suspect, lambda: dataset_inference(victim, suspect, private_images, public_images,
                                                              n_components=components, alpha=each, seed=seed, fast=fast))
        report.tests["dataset inference (GMM)"] = {**r.to_dict(), "queries": q, "seconds": round(s, 1)}
    if "alignment" in tests:
        r, q, s = _counted(suspect, lambda: alignment_test(suspect, private_images, public_images, views=views,
                                                           alpha=each, seed=seed, fast=fast))
        report.tests["view alignment"] = {**r.to_dict(), "queries": q, "seconds": round(s, 1)}
    if watermark:
        r, q, s = _counted(suspect, lambda: watermark_accuracy(suspect, watermark_head, watermark_images, alpha=each, seed=seed))
        report.tests["watermark"] = {**r.to_dict(), "queries": q, "seconds": round(s, 1)}
    return report


def planned_queries(n_private: int, n_public: int, views: int, watermark_images: int = 0, dataset_inference: bool = True) -> int:
    """Images `verify_suspect` sends a suspect: dataset inference embeds every private and public image once, view
    alignment `views` views of each (0: not run); the binary watermark two rotations of each of its images."""
    return (n_private + n_public) * (int(dataset_inference) + views) + 2 * watermark_images
