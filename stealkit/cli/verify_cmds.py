"""`stealkit verify ...`: ownership checks on a suspect encoder (Dziedzic et al., ICML 2022, arXiv:2205.07890; NeurIPS 2022, arXiv:2209.09024).

  stealkit verify --victim V --suspect S|URL --private cifar10:train --public cifar10:test   (every test, one verdict)
  stealkit verify dataset-inference --victim V --suspect S --private cifar10:train --public cifar10:test
  stealkit verify watermark --suspect S --head V.wmhead.safetensors --data cifar10:test
  stealkit verify embed-watermark --data cifar10:train --out runs/victim_wm [--victim V]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from stealkit.cli.app import app

verify_app = typer.Typer(help="Ownership verification: dataset inference, view alignment and rotation watermarks. "
                         "`stealkit verify --victim V --suspect S --private P --public Q` runs every test and prints one verdict.",
                         no_args_is_help=True, invoke_without_command=True)
app.add_typer(verify_app, name="verify")


def _images(spec: str, limit: int | None, seed: int, root: str | None, size: int):
    """"NAME:split" (split defaults to train) -> uint8 N×3×size×size, optionally a random subset of `limit`."""
    from stealkit.data.registry import load_dataset

    if spec.startswith(("folder:", "archive:")):
        name, split = spec, "train"
    else:
        name, _, split = spec.partition(":")
    data = load_dataset(name, split or "train", root=root, size=size)
    if limit is not None and limit < len(data):
        data = data.sample(limit, seed=seed)
    return data.images


def _emit(result: dict, as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=float))
    else:
        for line in lines:
            typer.echo(line)


@verify_app.callback()
def verify_cmd(
    ctx: typer.Context,
    suspect: Optional[str] = typer.Option(None, help="suspect: an encoder checkpoint, or the URL of a served API"),
    victim: Optional[Path] = typer.Option(None, help="the provider's encoder checkpoint (its watermark head, if any, beside it)"),
    private: Optional[str] = typer.Option(None, help="the victim's private training data, NAME:split"),
    public: Optional[str] = typer.Option(None, help="held-out data of the same distribution, NAME:split"),
    private_limit: int = typer.Option(10000, min=4, help="random private images to use (10,000: what the view-alignment "
                                      "test needed on the shared real victim, README)"),
    public_limit: int = typer.Option(10000, min=2, help="random public images to use"),
    align_views: int = typer.Option(4, min=2, help="augmented views per image for the view-alignment test"),
    components: int = typer.Option(20, min=1, help="GMM components of dataset inference"),
    watermark_limit: int = typer.Option(1000, min=1, help="public images the watermark test rotates"),
    alpha: float = typer.Option(0.01, help="the chance of a false accusation the verdict allows (split over the tests)"),
    price_per_1000: Optional[float] = typer.Option(None, help="the suspect API's price per 1,000 images, to report the cost"),
    max_queries: Optional[int] = typer.Option(None, min=1, help="refuse to start when an API suspect would be sent more images"),
    only: Optional[list[str]] = typer.Option(None, "--test", help="run only these: dataset-inference, alignment, watermark "
                                             "(repeatable; default: all, the watermark where the victim carries one)"),
    api_key_env: str = typer.Option("STEALKIT_API_KEY", help="env var holding the suspect API's key (URL suspects)"),
    size: int = typer.Option(32, help="image side the private/public sets are loaded at (the encoders resize)"),
    fast: bool = typer.Option(False, "--fast", help="embed a checkpoint suspect with bf16 autocast where the CPU/GPU has it "
                              "(faster on CPUs with bf16 units; fp32 elsewhere; the report records it)"),
    data_root: Optional[str] = typer.Option(None, help="data root (else STEALKIT_DATA, else ./data)"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
):
    """Every ownership test the victim supports on one suspect, each with its p-value and queries, and one verdict."""
    if ctx.invoked_subcommand is not None:
        return
    import os

    from stealkit.cli.common import fail
    from stealkit.models.checkpoint import load_encoder, weights_path
    from stealkit.runtime import pick_device
    from stealkit.data.registry import UnknownDataset
    from stealkit.targets.base import BudgetExceeded
    from stealkit.targets.remote import RemoteError
    from stealkit.verify.suspect import planned_queries, verify_suspect
    from stealkit.verify.watermark import head_path, load_watermark_head
    import torch

    names = {"dataset-inference": "dataset_inference", "alignment": "alignment", "watermark": None}
    bad = [t for t in (only or []) if t not in names]
    if bad:
        fail(f"--test {bad[0]!r}: choose dataset-inference, alignment or watermark")
    tests = tuple(names[t] for t in only if names[t]) if only else ("dataset_inference", "alignment")
    needed = (("suspect", suspect), ("victim", victim), ("private", private if tests else ""), ("public", public))
    missing = [f"--{n}" for n, v in needed if v is None]  # the watermark alone reads no private image
    if missing:
        fail(f"stealkit verify needs {', '.join(missing)} (or a subcommand: dataset-inference, watermark, embed-watermark)")
    if not 0 < alpha < 1:
        fail(f"--alpha {alpha}: give a probability between 0 and 1, e.g. 0.01")
    use_watermark = not only or "watermark" in only
    remote = suspect.startswith(("http://", "https://"))
    for label, path in (("victim", str(victim)), ("suspect", None if remote else suspect)):
        if path is not None and not weights_path(path).exists():
            fail(f"--{label} {path}: no checkpoint there ({weights_path(path)} is missing); give a path written by stealkit import/steal/pretrain")
    head = head_path(victim)  # the victim's only role here: its watermark head (dataset inference fits on the suspect)
    if only and "watermark" in only and not head.exists():
        fail(f"--test watermark: the victim carries no watermark ({head} is missing); embed one with stealkit verify embed-watermark")
    try:
        # the watermark alone needs only its public images: no private image is loaded or sent
        priv = _images(private, private_limit, seed, data_root, size) if tests else torch.empty(0, 3, size, size, dtype=torch.uint8)
        pub = _images(public, public_limit, seed + 1, data_root, size)  # the same sample with or without other tests
        wm = dict(watermark_head=load_watermark_head(head), watermark_images=pub[:watermark_limit]) if head.exists() and use_watermark else {}
        planned = planned_queries(len(priv), len(pub), align_views if "alignment" in tests else 0,
                                  len(wm.get("watermark_images", [])), "dataset_inference" in tests)
        if remote:
            key = os.environ.get(api_key_env)
            if not key:
                fail(f"the suspect is an API: put its key in ${api_key_env} (or name another variable with --api-key-env)")
            if max_queries is not None and planned > max_queries:
                fail(f"these tests would send the suspect API {planned:,} images, over --max-queries {max_queries:,}; "
                     f"lower --private-limit/--public-limit/--align-views or raise the cap")
            typer.echo(f"sending the suspect API {planned:,} images", err=True)
            from stealkit.targets.remote import RemoteTarget

            sus = RemoteTarget(suspect, key)
        else:
            sus = load_encoder(Path(suspect), device=pick_device(device))
        report = verify_suspect(None, sus, priv, pub, views=align_views, components=components, alpha=alpha, seed=seed,
                                price_per_1000=price_per_1000, tests=tests, fast=fast, **wm)
    except UnknownDataset as exc:
        fail(f"stealkit verify: {exc.args[0]}")
    except (FileNotFoundError, ValueError, RemoteError, BudgetExceeded) as exc:
        fail(f"stealkit verify: {exc}")
    used = f"{len(priv):,} private ({private}) and " if tests else ""
    lines = [f"suspect {suspect} against victim {victim}; {used}{len(pub):,} public ({public}) images"
             + ("" if wm else "; the victim carries no watermark (no .wmhead.safetensors beside it)")]
    for name, t in report.tests.items():
        stat = f"accuracy {t['accuracy']:.4f}" if "accuracy" in t else f"t = {t['t_statistic']:.3g}"
        lines.append(f"  {name:24s} p = {t['p_value']:.3g}  {stat}  ({t['queries']:,} queries, {t['seconds']:.0f} s)")
    cost = "" if report.cost is None else f", ${report.cost:.2f}"
    lines.append(f"verdict: {report.verdict} (threshold alpha/{len(report.tests)} = {report.threshold:.3g}; "
                 f"{report.queries:,} queries to the suspect{cost})")
    _emit(report.to_dict(), as_json, lines)


@verify_app.command("dataset-inference")
def dataset_inference_cmd(
    suspect: Path = typer.Option(..., help="suspect encoder checkpoint (.safetensors + .json)"),
    private: str = typer.Option(..., help="the victim's private training data, NAME:split"),
    public: str = typer.Option(..., help="held-out data of the same distribution, NAME:split"),
    victim: Optional[Path] = typer.Option(None, help="victim encoder checkpoint (needed with --fit-on victim)"),
    private_limit: Optional[int] = typer.Option(None, help="use a random subset of this many private images"),
    public_limit: Optional[int] = typer.Option(None, help="use a random subset of this many public images"),
    fit_fraction: float = typer.Option(0.5, help="fraction of the private images the GMM is fitted on"),
    components: int = typer.Option(20, min=1, help="GMM components (the released script: 20)"),
    covariance: str = typer.Option("diag", help="GMM covariance type: diag (released) | full | spherical | tied"),
    fit_on: str = typer.Option("suspect", help="fit the GMM on the 'suspect' (released) or the 'victim' representations"),
    views: str = typer.Option("crop", help="'crop': a RandomResizedCrop view of every image (released); 'none'"),
    test: str = typer.Option("student", help="'student' (pooled variance, released) or 'welch' t-test"),
    alpha: float = typer.Option(0.01, help="significance threshold for the verdict"),
    size: int = typer.Option(32, help="image side the sets are resized to"),
    data_root: Optional[str] = typer.Option(None, help="data root (else STEALKIT_DATA, else ./data)"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
):
    """GMM log-likelihoods of private-train vs public images under the suspect; one-sided t-test."""
    from stealkit.models.checkpoint import load_encoder
    from stealkit.runtime import pick_device
    from stealkit.verify.dataset_inference import dataset_inference

    from stealkit.cli.common import fail

    choices = {"fit-on": (fit_on, ("suspect", "victim")), "covariance": (covariance, ("diag", "full", "spherical", "tied")),
               "views": (views, ("crop", "none")), "test": (test, ("student", "welch"))}
    for flag, (value, allowed) in choices.items():
        if value not in allowed:
            fail(f"--{flag} {value!r}: choose one of {', '.join(allowed)}")
    if fit_on == "victim" and victim is None:
        fail("--fit-on victim needs --victim CHECKPOINT")
    dev = pick_device(device)
    sus = load_encoder(suspect, device=dev)
    vic = load_encoder(victim, device=dev) if victim is not None else None
    priv = _images(private, private_limit, seed, data_root, size)
    pub = _images(public, public_limit, seed + 1, data_root, size)
    r = dataset_inference(vic, sus, priv, pub, fit_fraction=fit_fraction, n_components=components, covariance_type=covariance,
                          fit_on=fit_on, alpha=alpha, seed=seed, views=views, test=test)
    _emit(
        r.to_dict(),
        as_json,
        [
            f"mean log-likelihood: private-train {r.mean_ll_train:.4g} (n={r.n_train}) vs public {r.mean_ll_test:.4g} (n={r.n_test}); GMM fitted on {r.n_fit} {r.fit_on} representations",
            f"t = {r.t_statistic:.4g}, p-value = {r.p_value:.3g} (alpha = {r.alpha}); {r.variant}",
            f"verdict: {r.verdict}",
        ],
    )


@verify_app.command("watermark")
def watermark_cmd(
    suspect: Path = typer.Option(..., help="suspect encoder checkpoint"),
    data: str = typer.Option(..., help="images to rotate, NAME:split (the provider's own data)"),
    head: Optional[Path] = typer.Option(None, help="watermark head (.wmhead.safetensors); default: beside --victim"),
    victim: Optional[Path] = typer.Option(None, help="watermarked victim checkpoint whose head lies beside it"),
    limit: Optional[int] = typer.Option(1000, help="use a random subset of this many images"),
    alpha: float = typer.Option(0.01, help="significance threshold for the verdict"),
    size: int = typer.Option(32),
    data_root: Optional[str] = typer.Option(None),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    as_json: bool = typer.Option(False, "--json"),
):
    """Accuracy of the victim's rotation head on the suspect's representations; Wilcoxon signed-rank test over images vs chance."""
    from stealkit.models.checkpoint import load_encoder
    from stealkit.runtime import pick_device
    from stealkit.verify.watermark import head_path, load_watermark_head, watermark_accuracy

    if head is None:
        if victim is None:
            raise typer.BadParameter("give --head, or --victim with its .wmhead.safetensors beside it")
        head = head_path(victim)
    sus = load_encoder(suspect, device=pick_device(device))
    r = watermark_accuracy(sus, load_watermark_head(head), _images(data, limit, seed, data_root, size), alpha=alpha)
    _emit(
        r.to_dict(),
        as_json,
        [
            f"watermark accuracy {r.accuracy:.4f} ({r.correct}/{r.trials}), chance {r.chance:.2f}",
            f"p-value = {r.p_value:.3g} (alpha = {r.alpha}; per-image Wilcoxon signed-rank; binomial over all predictions {r.p_binomial:.3g})",
            f"verdict: {r.verdict}",
        ],
    )


@verify_app.command("embed-watermark")
def embed_watermark_cmd(
    data: str = typer.Option(..., help="the provider's training data, NAME:split"),
    out: Path = typer.Option(..., help="output checkpoint path (head written beside it)"),
    victim: Optional[Path] = typer.Option(None, help="fine-tune this encoder (else pre-train --arch from scratch)"),
    arch: str = typer.Option("resnet18"),
    epochs: int = typer.Option(100),
    batch_size: int = typer.Option(256),
    lr: float = typer.Option(1e-3),
    head_lr: Optional[float] = typer.Option(None, help="the rotation head's learning rate (default: --lr)"),
    contrastive: bool = typer.Option(True, help="keep the SimCLR loss (the released joint training); --no-contrastive with --preserve to fine-tune"),
    preserve: float = typer.Option(0.0, min=0.0, help="weight of 1 - cos(f(A(x)), f_0(A(x))) against the encoder as given (fine-tuning a victim)"),
    normalize_head: bool = typer.Option(True, "--normalized-head/--raw-head",
                                        help="the head reads L2-normalised features (default) or raw ones (the released head)"),
    task: str = typer.Option("binary", help="binary: angles in (0°,180°) vs (180°,360°) (the released code); quarter: exact turns"),
    rotations: int = typer.Option(4, help="task quarter only: 4 (0/90/180/270°) or 2 (0/180°)"),
    weight: float = typer.Option(1.0, help="weight of the rotation loss"),
    limit: Optional[int] = typer.Option(None),
    size: int = typer.Option(32),
    data_root: Optional[str] = typer.Option(None),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
):
    """Train an encoder jointly on SimCLR and the rotation task; store the head beside the checkpoint."""
    from stealkit.models.checkpoint import load_encoder
    from stealkit.verify.watermark import WatermarkConfig, embed_watermark, save_watermarked

    from pydantic import ValidationError

    from stealkit.cli.common import fail

    try:
        cfg = WatermarkConfig(arch=arch, epochs=epochs, batch_size=batch_size, lr=lr, head_lr=head_lr, contrastive=contrastive,
                              preserve=preserve, normalize=normalize_head, task=task, rotations=rotations, weight=weight,
                              seed=seed, device=device)
    except ValidationError as exc:
        fail(f"bad watermark settings: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}")
    if preserve > 0 and victim is None:
        fail("--preserve keeps the features of the encoder being fine-tuned; give it with --victim")
    enc = load_encoder(victim) if victim is not None else None
    enc, head, log = embed_watermark(_images(data, limit, seed, data_root, size), cfg, enc)
    weights, hp = save_watermarked(enc, head, out, watermark_config=cfg.model_dump(), dataset=data, log=log)
    typer.echo(f"wrote {weights} and {hp} (final rotation accuracy {log[-1]['rot_acc']:.3f})")
