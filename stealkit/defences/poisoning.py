"""Feature poisoning (Liu, Jia, Liu, Gong, "StolenEncoder: Stealing Pre-trained Encoders in Self-supervised
Learning", ACM CCS 2022, arXiv:2201.05889, Section VII-C, Eq. 10).

For each query x the API returns v = f_t(x) + δ, where δ solves
    max_δ  d(v, f_s'(x)) + λ · d(v, f_s'(A(x)))   s.t.  ‖δ‖_p ≤ ε,  p ∈ {2, ∞}
f_s' is a *shadow* stolen encoder the provider trains itself (Eq. 7 on its own pre-training data, with
the attacker's settings: the paper's strong defender); "d, λ, and A in Equation (10) are the same as
those used by the attacker" (ℓ2, 20, flip+jitter+gray by default).

Which reading of Eq. 10 (the default, and why). The attacker's d as released (the authors' StolenEncoder
code, `SimCLRSurrogate.forward`) is ‖unit(f_s(x)) − v‖: the stolen encoder's feature is L2-normalised,
the answer v is used as the API returned it, never re-normalised. With `normalize: true` (the attacker's
setting, which `stealkit.experiment.shadows` copies here) this defence therefore normalises the shadow's
features and leaves v as it is: d(v, s) = ‖v − unit(s)‖. That is the default. The earlier reading,
`normalize_answer: true`, also re-normalises v inside d; Eq. 10 then no longer depends on ‖v‖, and the
only way to raise it is to rotate the answer away from f_t(x) (a review measured a cosine of −0.72
between poisoned and clean answers). It is kept for comparison only.
Solver: projected gradient ascent (PGA), `steps` steps of `step_size` (default 2.5·ε/steps; normalised
gradient for ℓ2, its sign for ℓ∞), from δ = 0 by default (deterministic: no random draw, and no random
vector left in the answer), keeping each query's best iterate (never worse than δ = 0). The earlier
solver started from a uniform random point of the ball: `random_start: true`. Both earlier choices
together (`normalize_answer: true, random_start: true`) reproduce the earlier output exactly.
Shapes: features N×D float32, images uint8 N×3×H×W -> N×D.

`shadow` is an Encoder or a checkpoint path. Training one from a spec (victim, the provider's data,
the attacker's settings) is the experiment layer's job: `stealkit.experiment.shadows`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_serializer, field_validator

from stealkit.defences.base import Defence, DefenceConfig, register_defence
from stealkit.losses.distance import feature_distance
from stealkit.losses.stolen_encoder import StolenEncoderLossConfig

NORMS = {"l2": "l2", "2": "l2", "2.0": "l2", "linf": "linf", "inf": "linf", "l_inf": "linf"}


class PoisoningConfig(DefenceConfig):
    shadow: Any  # the shadow encoder f_s' (an Encoder) or its checkpoint path
    epsilon: float = Field(ge=0)  # the ℓp budget of δ
    norm: Literal["l2", "linf", "2", "2.0", "inf", "l_inf"] = "l2"
    lam: float = Field(StolenEncoderLossConfig().lam, ge=0)  # the attacker's λ
    distance: Literal["l2", "l1", "cosine"] = StolenEncoderLossConfig().distance
    normalize: bool = StolenEncoderLossConfig().normalize  # the attacker's: L2-normalise the shadow's features inside d
    normalize_answer: bool = False  # also re-normalise the poisoned answer v inside d (the earlier reading; see the module doc)
    augment: str = "flip+jitter+gray"  # StolenEncoder's A (Section V-A)
    steps: int = Field(10, ge=1)  # projected gradient ascent steps per query
    step_size: float | None = Field(None, gt=0)  # default 2.5·ε/steps
    random_start: bool = False  # True: start from a uniform random point of the ball (the earlier solver)
    device: str | None = None
    batch_size: int = Field(256, ge=1)

    @field_validator("norm", mode="before")
    @classmethod
    def _norm(cls, v):
        return str(v).lower()

    @field_validator("shadow")
    @classmethod
    def _shadow(cls, v):
        if isinstance(v, dict):
            raise ValueError("shadow is a training spec; resolve it first (stealkit.experiment.shadows.resolve_defence) "
                             "or give an encoder checkpoint path")
        if not isinstance(v, (str, Path, torch.nn.Module)):
            raise ValueError(f"shadow must be an encoder or a checkpoint path, got {type(v).__name__}")
        return str(v) if isinstance(v, Path) else v

    @field_serializer("shadow")
    def _shadow_identity(self, v):
        if isinstance(v, torch.nn.Module):
            from stealkit.probes.features import encoder_fingerprint

            return "encoder:" + encoder_fingerprint(v)
        return str(v)


@register_defence("poisoning")
class FeaturePoisoning(Defence):
    """Eq. (10) against the shadow `shadow` (an Encoder or a checkpoint path), ‖δ‖_p ≤ `epsilon`; the attacker's
    d as released (v not re-normalised) and a zero start unless `normalize_answer` / `random_start` say otherwise."""

    Config = PoisoningConfig

    def setup(self) -> None:
        from stealkit.augment import Augmenter
        from stealkit.runtime import pick_device

        c = self.config
        self.device = pick_device(c.device)
        shadow = c.shadow
        if isinstance(shadow, str):
            from stealkit.models.checkpoint import load_encoder

            shadow = load_encoder(shadow, device=self.device)
        self.shadow = shadow.to(self.device).eval()
        self.epsilon, self.norm, self.lam = float(c.epsilon), NORMS[c.norm], float(c.lam)
        self.distance, self.normalize, self.steps = c.distance, bool(c.normalize), int(c.steps)
        self.normalize_answer = bool(c.normalize_answer)
        self.step_size = float(c.step_size) if c.step_size is not None else 2.5 * self.epsilon / self.steps
        self.random_start, self.batch_size = bool(c.random_start), int(c.batch_size)
        self.augment = Augmenter(c.augment, size=self.shadow.spec.input_size).to(self.device)

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
        """Eq. (10) per query: d(v, f_s'(x)) + λ·d(v, f_s'(A(x))) for v = f_t(x)+δ -> N.
        The shadow's features are L2-normalised if `normalize`, v only if `normalize_answer`."""
        answer = lambda: F.normalize(poisoned.float(), dim=1) if self.normalize_answer else poisoned  # noqa: E731
        shadow = lambda s: F.normalize(s.float(), dim=1) if self.normalize else s  # noqa: E731
        d = lambda s: feature_distance(answer(), shadow(s), self.distance, False)  # noqa: E731
        return d(s_clean) + self.lam * d(s_aug)

    def _project(self, delta: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return delta.clamp(-self.epsilon, self.epsilon)
        norms = delta.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return delta * (self.epsilon / norms).clamp(max=1.0)

    def solve(self, features: torch.Tensor, s_clean: torch.Tensor, s_aug: torch.Tensor) -> torch.Tensor:
        """PGA on δ (N×D) within the ε-ball, from δ = 0 unless `random_start`; the best δ per query (δ = 0 included)."""
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
