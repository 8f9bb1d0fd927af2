"""Feature poisoning (StolenEncoder, 004, Section VII-C, Equation 10).

For each query x the API returns f_t(x) + δ, where δ solves
    max_δ  d(f_t(x) + δ, f_s'(x)) + λ · d(f_t(x) + δ, f_s'(A(x)))   s.t.  ‖δ‖_p ≤ ε,  p ∈ {2, ∞}
f_s' is a *shadow* stolen encoder the provider trains itself (Eq. 7 on its own pre-training data,
with the attacker's settings: `train_shadow`); d, λ and A are the attacker's too (ℓ2, 20,
flip+jitter+gray by default). Solved per query by projected gradient ascent (PGA) from a random
start in the ball, keeping each query's best iterate (never worse than δ = 0).
Shapes: features N×D float32, images uint8 N×3×H×W -> N×D.

`shadow` is an Encoder, a checkpoint path, or (for configs) a spec the defence trains once and
caches under STEALKIT_CACHE/shadows:
    shadow: {victim: <victim block: checkpoint or pretrain>, data: {name: cifar10, split: train},
             config: {<the attacker's StolenEncoder settings>}, data_root: null}
With a spec, d, λ, A and normalize default to the spec's config (the paper's strong defender).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from stealkit.defences.base import Defence, register_defence

NORMS = {"l2": "l2", "2": "l2", "2.0": "l2", "linf": "linf", "inf": "linf", "l_inf": "linf"}


def _distance(a: torch.Tensor, b: torch.Tensor, kind: str, normalize: bool) -> torch.Tensor:
    """Per-row d(a_i, b_i) -> N, as in Eq. (3): l2 = ‖a−b‖₂ (not squared), l1, cosine = 1 − cos."""
    if normalize:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    if kind == "l2":
        return (a - b).pow(2).sum(1).clamp_min(1e-12).sqrt()
    if kind == "l1":
        return (a - b).abs().sum(1)
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(a, b, dim=1)
    raise ValueError(f"unknown distance {kind!r}; choose l2, l1 or cosine")


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
        attacker = {}
        if isinstance(shadow, dict):
            attacker = dict(shadow.get("config") or {})
            shadow = shadow_from_spec(shadow, device=str(self.device))
        lam = attacker.get("lam", 20.0) if lam is None else lam
        distance = attacker.get("distance", "l2") if distance is None else distance
        normalize = attacker.get("normalize", False) if normalize is None else normalize
        augment = attacker.get("augment", "flip+jitter+gray") if augment is None else augment
        if isinstance(shadow, (str, Path)):
            from stealkit.models.checkpoint import load_encoder

            shadow = load_encoder(shadow, device=self.device)
        self.shadow = shadow.to(self.device).eval()
        self.epsilon, self.norm, self.lam = float(epsilon), NORMS[norm_key], float(lam)
        self.distance, self.normalize, self.steps = distance, bool(normalize), int(steps)
        self.step_size = float(step_size) if step_size is not None else 2.5 * self.epsilon / self.steps
        self.random_start, self.batch_size = bool(random_start), int(batch_size)
        self.augment = Augmenter(augment, size=self.shadow.spec.input_size).to(self.device)
        _distance(torch.zeros(1, 2), torch.ones(1, 2), distance, False)  # fail now on an unknown distance

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
        d = lambda b: _distance(poisoned, b, self.distance, self.normalize)  # noqa: E731
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

    @classmethod
    def trained(cls, target_encoder, provider_images: torch.Tensor, epsilon: float, norm="l2", config=None, *, device=None, **kw):
        """Train the shadow f_s' with the attacker's settings `config`, then poison with its d, λ, A."""
        shadow = train_shadow(target_encoder, provider_images, config, device=device)
        cfg = dict(config) if isinstance(config, dict) else (config.model_dump() if hasattr(config, "model_dump") else {})
        for key in ("lam", "distance", "normalize"):
            if key in cfg:
                kw.setdefault(key, cfg[key])
        if "augment" in cfg:
            kw.setdefault("augment", cfg["augment"])
        return cls(shadow, epsilon, norm, device=device, **kw)


def train_shadow(target, provider_images: torch.Tensor, config=None, *, device=None):
    """The provider's shadow stolen encoder f_s' (Section VII-C): StolenEncoder (Eq. 7) trained on the
    provider's own images (uint8 N×3×H×W) against its unperturbed target -> Encoder on CPU.

    target: the victim Encoder (or any Target; queried once per image). config: the attacker's settings
    (a StealConfig or dict for stealkit.attacks.stolen_encoder.train_stolen_encoder).
    """
    from stealkit.attacks.stolen_encoder import train_stolen_encoder  # lazy: the attack module is optional here
    from stealkit.models.encoder import embed

    feats = target.embed(provider_images) if hasattr(target, "embed") and not isinstance(target, torch.nn.Module) else embed(target, provider_images)
    result = train_stolen_encoder(provider_images, feats, config, device=device, progress=False)
    encoder = result[0] if isinstance(result, tuple) else result
    return getattr(encoder, "encoder", encoder)


SHADOW_KEYS = {"victim", "data", "config", "data_root"}


def shadow_from_spec(spec: dict, device: str | None = None):
    """{victim, data, config[, data_root]} -> the provider's shadow encoder, trained once and cached
    (STEALKIT_CACHE/shadows/shadow-<hash of the spec>) so every row and every honest-user evaluation
    of a config shares it. The victim comes from get_victim (itself cached by its settings)."""
    from stealkit.data import resolve_cache_dir
    from stealkit.experiment.config import VictimSpec
    from stealkit.experiment.victims import get_victim, load_data, spec_key
    from stealkit.models.checkpoint import checkpoint_exists, load_encoder, save_encoder
    from stealkit.pretrain.config import DataSpec

    unknown = set(spec) - SHADOW_KEYS
    if unknown or "victim" not in spec or "data" not in spec:
        raise ValueError(f"poisoning shadow spec needs 'victim' and 'data' (optional 'config', 'data_root'); got keys {sorted(spec)}")
    victim = VictimSpec(**spec["victim"]).model_dump()
    data = DataSpec(**spec["data"])
    config = dict(spec.get("config") or {})
    key = spec_key({"victim": victim, "data": data.model_dump(), "config": config})
    path = resolve_cache_dir() / "shadows" / f"shadow-{key}"
    if checkpoint_exists(path):
        return load_encoder(path)
    encoder, _ = get_victim(victim, spec.get("data_root"), device or "auto", progress=False, log=lambda m: None)
    images = load_data(data, spec.get("data_root")).images
    shadow = train_shadow(encoder, images, config, device=device)
    save_encoder(shadow, path, role="poisoning shadow (004 Section VII-C)", victim=victim, data=data.model_dump(), config=config)
    return shadow
