"""Feature poisoning (Liu et al., "StolenEncoder", CCS 2022, arXiv:2201.05889, Section VII-C, Eq. 10).

For each query x the API returns f_t(x) + δ, where δ solves
    max_δ  d(f_t(x) + δ, f_s'(x)) + λ · d(f_t(x) + δ, f_s'(A(x)))   s.t.  ‖δ‖_p ≤ ε,  p ∈ {2, ∞}
f_s' is a *shadow* stolen encoder the provider trains itself (Eq. 7 on its own pre-training data, with
the attacker's settings: the paper's strong defender); d, λ and A are the attacker's too (ℓ2, 20,
flip+jitter+gray by default). Solved per query by projected gradient ascent (PGA) from a random start
in the ball, keeping each query's best iterate (never worse than δ = 0).
Shapes: features N×D float32, images uint8 N×3×H×W -> N×D.

`shadow` is an Encoder or a checkpoint path. Training one from a spec (victim, the provider's data,
the attacker's settings) is the experiment layer's job: `stealkit.experiment.shadows`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from stealkit.defences.base import Defence, register_defence
from stealkit.losses.distance import feature_distance
from stealkit.losses.stolen_encoder import StolenEncoderLossConfig

NORMS = {"l2": "l2", "2": "l2", "2.0": "l2", "linf": "linf", "inf": "linf", "l_inf": "linf"}


@register_defence("poisoning")
class FeaturePoisoning(Defence):
    """shadow: an Encoder or a checkpoint path; epsilon: the ℓp budget; norm: "l2" or "linf"."""

    def __init__(
        self,
        shadow,
        epsilon: float,
        norm: str | int | float = "l2",
        lam: float | None = None,
        distance: str | None = None,
        normalize: bool | None = None,
        augment: str | None = None,
        steps: int = 10,
        step_size: float | None = None,
        random_start: bool = True,
        device: str | None = None,
        batch_size: int = 256,
    ):
        from stealkit.augment import Augmenter
        from stealkit.runtime import pick_device

        norm_key = str(norm).lower()
        if norm_key not in NORMS:
            raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
        if epsilon < 0 or steps < 1:
            raise ValueError(f"need epsilon >= 0 and steps >= 1, got {epsilon}, {steps}")
        self.device = pick_device(device)
        if isinstance(shadow, dict):
            raise ValueError("poisoning: shadow is a training spec; resolve it first (stealkit.experiment.shadows.resolve_defence)"
                             " or give an encoder checkpoint path")
        defaults = StolenEncoderLossConfig()  # the attacker's StolenEncoder defaults, unless told otherwise
        lam = defaults.lam if lam is None else lam
        distance = defaults.distance if distance is None else distance
        normalize = defaults.normalize if normalize is None else normalize
        augment = "flip+jitter+gray" if augment is None else augment  # StolenEncoder's A (Section V-A)
        if isinstance(shadow, (str, Path)):
            from stealkit.models.checkpoint import load_encoder

            shadow = load_encoder(shadow, device=self.device)
        self.shadow = shadow.to(self.device).eval()
        self.epsilon, self.norm, self.lam = float(epsilon), NORMS[norm_key], float(lam)
        self.distance, self.normalize, self.steps = distance, bool(normalize), int(steps)
        self.step_size = float(step_size) if step_size is not None else 2.5 * self.epsilon / self.steps
        self.random_start, self.batch_size = bool(random_start), int(batch_size)
        self.augment = Augmenter(augment, size=self.shadow.spec.input_size).to(self.device)
        feature_distance(torch.zeros(1, 2), torch.ones(1, 2), distance, False)  # fail now on an unknown distance

    @torch.no_grad()
    def shadow_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f_s'(x), f_s'(A(x))) for uint8 N×3×H×W images -> two float32 N×D on self.device."""
        clean, aug = [], []
        for i in range(0, len(images), self.batch_size):
            x = images[i : i + self.batch_size].to(self.device)
            clean.append(self.shadow(x).float())
            aug.append(self.shadow(self.augment(x)).float())
        return torch.cat(clean), torch.cat(aug)

    def objective(self, poisoned: torch.Tensor, s_clean: torch.Tensor, s_aug: torch.Tensor) -> torch.Tensor:
        """Eq. (10) per query: d(v, f_s'(x)) + λ·d(v, f_s'(A(x))) for v = f_t(x)+δ -> N."""
        d = lambda b: feature_distance(poisoned, b, self.distance, self.normalize)  # noqa: E731
        return d(s_clean) + self.lam * d(s_aug)

    def _project(self, delta: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return delta.clamp(-self.epsilon, self.epsilon)
        norms = delta.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return delta * (self.epsilon / norms).clamp(max=1.0)

    def solve(self, features: torch.Tensor, s_clean: torch.Tensor, s_aug: torch.Tensor) -> torch.Tensor:
        """PGA on δ (N×D) within the ε-ball; returns the best δ per query (δ = 0 included)."""
        ft = features.detach().float().to(self.device)
        best = torch.zeros_like(ft)
        best_obj = self.objective(ft, s_clean, s_aug)
        if self.epsilon == 0:
            return best
        if self.random_start:
            delta = self._project(torch.empty_like(ft).uniform_(-self.epsilon, self.epsilon))
        else:
            delta = torch.zeros_like(ft)
        for _ in range(self.steps):
            with torch.enable_grad():
                delta.requires_grad_(True)
                obj = self.objective(ft + delta, s_clean, s_aug)
                (grad,) = torch.autograd.grad(obj.sum(), delta)
            with torch.no_grad():
                better = obj.detach() > best_obj
                best[better], best_obj[better] = delta.detach()[better], obj.detach()[better]
                if self.norm == "linf":
                    step = grad.sign()
                else:
                    step = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
                delta = self._project(delta.detach() + self.step_size * step)
        with torch.no_grad():
            obj = self.objective(ft + delta, s_clean, s_aug)
            better = obj > best_obj
            best[better] = delta[better]
        return best

    def __call__(self, features: torch.Tensor, *, images: torch.Tensor | None = None, account: str = "anonymous") -> torch.Tensor:
        if images is None:
            raise ValueError("feature poisoning needs the queried images (the shadow encoder sees them)")
        if self.epsilon == 0:
            return features
        s_clean, s_aug = self.shadow_features(images)
        delta = self.solve(features, s_clean, s_aug)
        return (features.float() + delta.to(features.device)).to(features.dtype)

    def __repr__(self) -> str:
        return f"FeaturePoisoning(epsilon={self.epsilon}, norm={self.norm}, lam={self.lam}, steps={self.steps})"
