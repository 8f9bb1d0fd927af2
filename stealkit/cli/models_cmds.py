"""`stealkit import WEIGHTS... --arch ... --out NAME`: a provider's own weights -> a stealkit checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from stealkit.cli.app import app
from stealkit.cli.common import console, fail


@app.command("import")
def import_weights(
    weights: list[str] = typer.Argument(..., help="state-dict files (.safetensors, .pt, .pth, .bin), a folder of shards, or pkg:PACKAGE/path/in/it"),
    arch: str = typer.Option(..., "--arch", help="registry name (resnet18, ...), torchvision:NAME or timm:NAME"),
    out: Path = typer.Option(..., "--out", help="checkpoint to write (OUT.safetensors + OUT.json)"),
    cifar_stem: bool = typer.Option(False, "--cifar-stem/--no-cifar-stem", help="3×3 stride-1 first conv, no max-pool (CIFAR-style ResNets)"),
    input_size: int = typer.Option(32, "--input-size", min=8, help="side the encoder resizes its input to"),
    mean: str = typer.Option("cifar10", help="input mean R,G,B on [0,1] images, or cifar10 | imagenet | none"),
    std: str = typer.Option("cifar10", help="input std R,G,B, or cifar10 | imagenet | none"),
    strip_prefix: Optional[str] = typer.Option(None, "--strip-prefix", help="remove this prefix from every key (e.g. backbone. or module.)"),
    ignore_prefix: list[str] = typer.Option([], "--ignore-prefix", help="leave out keys starting with this (e.g. fc. for a classifier head); repeatable"),
    key: Optional[str] = typer.Option(None, "--key", help="for a .pt holding a dict of dicts: the entry with the state dict (e.g. state_dict)"),
    key_map: Optional[str] = typer.Option(None, "--key-map", help="rename another library's keys: efficientnet_pytorch (onto timm:tf_efficientnet_*)"),
    dtype: str = typer.Option("float32", help="dtype the checkpoint stores: float32 | float16 | bfloat16 (run in fp32 either way)"),
    trained_on: Optional[str] = typer.Option(None, "--trained-on", help="the provider's pre-training set, e.g. cifar10:train (for reports)"),
    dataset_size: Optional[int] = typer.Option(None, "--dataset-size", min=1, help="images in the pre-training set (surrogate.fraction_of_victim needs it)"),
):
    """Turn a provider's encoder weights into a stealkit checkpoint that serve, evaluate, steal and run take.

    Nothing is unpickled: safetensors, or torch.load(weights_only=True). The key check is strict: its error
    lists missing and unexpected keys and the prefix to strip."""
    from stealkit.models.checkpoint import save_encoder
    from stealkit.models.encoder import EncoderSpec
    from stealkit.models.importer import DTYPES, NORMALISATIONS, WeightsImportError, import_encoder, parse_norm

    if dtype not in DTYPES:
        fail(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    try:
        m, s = parse_norm(mean), parse_norm(std)
        m = NORMALISATIONS[m][0] if isinstance(m, str) else m
        s = NORMALISATIONS[s][1] if isinstance(s, str) else s
        if min(s) <= 0:
            raise WeightsImportError(f"--std must be positive, got {s}")
        spec = EncoderSpec(arch=arch, input_size=input_size, cifar_stem=cifar_stem, mean=m, std=s)
        encoder, info = import_encoder(weights, spec, strip=strip_prefix, ignore_prefixes=tuple(ignore_prefix), key=key, key_map=key_map)
    except (WeightsImportError, ValueError) as exc:
        fail(str(exc))
    extra = {"dataset": trained_on, "dataset_size": dataset_size} if trained_on or dataset_size else {}
    path = save_encoder(encoder, out, dtype=DTYPES[dtype], imported=info, **extra)
    params = sum(p.numel() for p in encoder.parameters())
    console.print(f"imported {info['tensors']} tensors ({params / 1e6:.2f} M parameters, source dtype {'/'.join(info['source_dtypes'])}) "
                  f"from {len(info['files'])} file(s) as {arch}{' (CIFAR stem)' if cifar_stem else ''}, {input_size}px, "
                  f"{encoder.feature_dim}-d features")
    if info["ignored_keys"]:
        console.print(f"left out {len(info['ignored_keys'])} keys: {', '.join(info['ignored_keys'][:6])}")
    console.print(f"wrote {path} (+ {Path(path).with_suffix('.json').name}); weights sha256 {info['sha256'][:16]}…")
