"""Self-describing encoder checkpoints: `<name>.safetensors` (weights) + `<name>.json` (sidecar).

The sidecar holds the architecture spec, feature dimension, preprocessing, the training config,
dataset, seed and package versions. Loading reads only safetensors and JSON: nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from stealkit.models.encoder import Encoder, EncoderSpec
from stealkit.runtime import environment

FORMAT = "stealkit-encoder/1"


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """`name`, `name.safetensors` or `name.json` -> (name.safetensors, name.json). Any other suffix is part
    of the name (`rn18.pt` -> rn18.pt.safetensors, never rn18.safetensors)."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def weights_path(path: str | os.PathLike) -> Path:
    """The .safetensors file of a checkpoint given with or without its suffix."""
    return _paths(path)[0]


def save_encoder(encoder: Encoder, path: str | os.PathLike, dtype: torch.dtype | None = None, **info) -> Path:
    """Write weights and sidecar atomically (temp file + rename); returns the .safetensors path.

    `info` is stored in the sidecar: e.g. train_config=..., dataset="cifar10:train", seed=0.
    `dtype` (e.g. torch.float16) stores floating tensors in that precision; loading casts them back to fp32.
    """
    weights, sidecar = _paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    meta = {"format": FORMAT, "spec": encoder.spec.to_dict(), "environment": environment(), **info}
    tmp_w, tmp_j = weights.with_name(weights.name + ".tmp"), sidecar.with_name(sidecar.name + ".tmp")
    save_file(state, str(tmp_w), metadata={"format": FORMAT})
    tmp_j.write_text(json.dumps(meta, indent=2, default=str))
    os.replace(tmp_w, weights)
    os.replace(tmp_j, sidecar)
    return weights


def read_sidecar(path: str | os.PathLike) -> dict:
    weights, sidecar = _paths(path)
    if not sidecar.exists():
        given = Path(path)
        if given.suffix in (".pt", ".pth", ".bin") or (given.suffix == ".safetensors" and given.exists()):
            raise FileNotFoundError(f"{given} is not a stealkit checkpoint (no {sidecar.name} beside it); "
                                    f"turn a provider's weights into one with: stealkit import {given} --arch ... --out NAME")
        raise FileNotFoundError(f"no checkpoint sidecar at {sidecar}; an encoder checkpoint is a .safetensors + .json pair")
    meta = json.loads(sidecar.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{sidecar} is not a stealkit encoder checkpoint (format {meta.get('format')!r})")
    return meta


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> Encoder:
    """Rebuild the encoder from its sidecar and load the weights (strict)."""
    weights, _ = _paths(path)
    meta = read_sidecar(path)
    if not weights.exists():
        raise FileNotFoundError(f"checkpoint weights missing: {weights}")
    encoder = Encoder(EncoderSpec.from_dict(meta["spec"]))
    encoder.load_state_dict(load_file(str(weights)), strict=True)
    return encoder.to(device).eval()


def checkpoint_exists(path: str | os.PathLike) -> bool:
    weights, sidecar = _paths(path)
    return weights.exists() and sidecar.exists()
