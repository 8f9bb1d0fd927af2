"""The poisoning defence's shadow stolen encoder, trained by the provider (Liu et al., "StolenEncoder",
CCS 2022, arXiv:2201.05889, Section VII-C: the strong defender trains its own stolen encoder "based on
Equation (7) by treating its own pre-training dataset as the surrogate dataset and using the same
settings for other parameters as the attacker").

A defence spec in a config may give the shadow as a spec instead of a checkpoint:
    {name: poisoning, epsilon: 3, norm: l2,
     shadow: {victim: <victim block>, data: {name: cifar10, split: train},
              config: {<the attacker's StolenEncoder settings>}, normalize_answers: false, data_root: null}}
The paper's setting is the default: `data` left out means the victim's own pre-training data (its
`pretrain.data`; a checkpoint victim must name it), and `config` left out means StolenEncoder's defaults
(the paper's attacker). A config whose attacker is sized down (fewer epochs, a smaller architecture) gives
the same `config` to its shadow (a YAML anchor), and says so where `data` is a subset.
`resolve_defence` trains that shadow once (cached under STEALKIT_CACHE/shadows by the spec), and returns
the defence spec with `shadow` replaced by the checkpoint's path and d, λ, A and normalisation set to the
attacker's (the strong defender knows them). Defences themselves only ever receive resolved objects.
"""

from __future__ import annotations

import torch

from stealkit.data import resolve_cache_dir
from stealkit.experiment.specs import VictimSpec
from stealkit.models.checkpoint import checkpoint_exists, save_encoder, weights_path

SHADOW_KEYS = {"victim", "data", "config", "data_root", "normalize_answers"}


def train_shadow(target, provider_images: torch.Tensor, config=None, *, normalize_answers: bool = False, device=None):
    """The provider's shadow f_s': StolenEncoder (Eq. 7) trained on its own images (uint8 N×3×H×W) against
    its unperturbed answers -> Encoder on CPU. target: the victim Encoder (answers as the API gives them,
    normalised or not) or any Target; config: the attacker's settings (StealConfig fields, or a dict)."""
    from stealkit.attacks.steal_config import StealConfig
    from stealkit.attacks.trainer import train_stolen_encoder
    from stealkit.targets.answers import api_answers

    if isinstance(target, torch.nn.Module):
        feats = api_answers(target, provider_images, normalize=normalize_answers)
    else:
        feats = target.embed(provider_images)
    cfg = config if isinstance(config, StealConfig) else StealConfig(**(config or {}))
    encoder, _ = train_stolen_encoder(provider_images, feats, cfg, device=device, progress=False)
    return encoder


def attacker_settings(config: dict | None) -> dict:
    """d, λ, A and normalisation of the attacker's StolenEncoder settings (its defaults where not given)."""
    from stealkit.attacks.steal_config import StealConfig

    c = StealConfig(**(config or {}))
    return {"lam": c.lam, "distance": c.distance, "normalize": c.normalize, "augment": c.augment}


def shadow_problem(spec: dict) -> str | None:
    """What is wrong with a shadow spec (unknown keys, no victim, no data for a checkpoint victim), or None."""
    unknown = set(spec) - SHADOW_KEYS
    if unknown or "victim" not in spec:
        return (f"poisoning shadow spec needs 'victim' (optional {', '.join(sorted(SHADOW_KEYS - {'victim'}))}); "
                f"got keys {sorted(spec)}")
    victim = spec["victim"]
    if "data" not in spec and not (isinstance(victim, dict) and victim.get("pretrain")):
        return ("poisoning shadow spec: the victim is a checkpoint, so name the provider's own pre-training data "
                "as 'data' (the paper trains the shadow on it)")
    return None


def shadow_data(spec: dict):
    """The shadow's training data: spec['data'], else the victim's own pre-training data (the paper's setting)."""
    from stealkit.pretrain.config import DataSpec, PretrainConfig

    if "data" in spec:
        return DataSpec(**spec["data"])
    return PretrainConfig(**spec["victim"]["pretrain"]).data


def shadow_checkpoint(spec: dict, device: str | None = None, progress: bool = False) -> str:
    """A shadow spec -> the path of its trained checkpoint (trained once, cached by the spec)."""
    from stealkit.experiment.victims import get_victim, load_data, spec_key

    problem = shadow_problem(spec)
    if problem:
        raise ValueError(problem)
    victim = VictimSpec(**spec["victim"]).model_dump()
    data = shadow_data(spec)
    config = dict(spec.get("config") or {})
    normalize = bool(spec.get("normalize_answers", False))
    key_parts = {"victim": victim, "data": data.model_dump(), "config": config}
    if normalize:
        key_parts["normalize_answers"] = True
    path = resolve_cache_dir() / "shadows" / f"shadow-{spec_key(key_parts)}"
    if not checkpoint_exists(path):
        encoder, _ = get_victim(victim, spec.get("data_root"), device or "auto", progress=False, log=lambda m: None)
        images = load_data(data, spec.get("data_root")).images
        shadow = train_shadow(encoder, images, config, normalize_answers=normalize, device=device)
        save_encoder(shadow, path, role="poisoning shadow (StolenEncoder Section VII-C)", victim=victim, data=data.model_dump(),
                     config=config, normalize_answers=normalize)
    return str(weights_path(path))


def resolved_settings(spec: dict | None) -> dict | None:
    """A defence spec with every setting its Config fills in by default, without building it (nothing is
    loaded or trained; a shadow spec stays a spec) -> JSON-able dict, for cache keys: a changed default
    (a solver's, a preset's) then changes the key instead of reusing what the old default gave."""
    if not spec or spec.get("name", "none") == "none":
        return None
    from stealkit.defences.base import defence_class

    settings = dict(spec)
    name = settings.pop("name")
    shadow = settings.get("shadow")
    if isinstance(shadow, dict):
        for key, value in attacker_settings(shadow.get("config")).items():
            settings.setdefault(key, value)
        settings["shadow"] = "<shadow spec>"
    out = defence_class(name).Config(**settings).model_dump(mode="json")
    if isinstance(shadow, dict):
        out["shadow"] = shadow
    return {"name": name, **out}


def resolve_defence(spec: dict | None, device: str | None = None) -> dict | None:
    """A defence spec with any shadow *spec* trained and replaced by its checkpoint path (see module doc)."""
    if not spec or not isinstance(spec.get("shadow"), dict):
        return spec
    out = dict(spec)
    shadow = out.pop("shadow")
    for key, value in attacker_settings(shadow.get("config")).items():
        out.setdefault(key, value)
    out["shadow"] = shadow_checkpoint(shadow, device=device)
    return out
