"""StolenEncoder (Liu et al., CCS 2022; seed 004, Algorithm 1) and its Table X variants.

Query the target once per surrogate image (|D| queries) and cache the answers v(x); train a
randomly initialised stolen encoder f_s on L = L1 + λ·L2 (Eq. 7):
    L1 = d(v(x), f_s(x)),  L2 = d(v(x), f_s(A(x)))
Defaults (Section V-A): ResNet34, λ=20, ℓ2 distance, 100 epochs, Adam lr 1e-3, batch 64,
A = flip + colour jitter + grayscale. Shapes: surrogate uint8 N×3×H×W, answers N×D.

The authors' released code differs from the paper in three ways, each an option here:
`normalize=True` (L2-normalise both vectors before d), `reduction="sum"` (sum the per-sample
distances over the batch) and `optimizer="sgd"` with `weight_decay=5e-4` (the released code's lr 1e-3,
momentum 0.9, weight decay 5e-4; weight_decay defaults to 0 for every optimiser, so set it).

Variants: `stolenencoder-wo-aug` (λ=0), `stolenencoder-query-aug` (queries f_t(A(x)) for a fresh
A(x) of every image every epoch: (e+1)·|D| queries, Eq. 5).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Literal

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from stealkit.attacks.base import Attack, StealResult, StrictModel, query_target, register_attack
from stealkit.augment import Augmenter
from stealkit.graph_step import TrainStep
from stealkit.losses import stolen_encoder_loss
from stealkit.models.encoder import Encoder, build_encoder
from stealkit.runtime import autocast, pick_device, seed_everything
from stealkit.training import TrainState, epoch_generator, make_optimizer, prepare_model, seed_epoch


class StealConfig(StrictModel):
    arch: str = "resnet34"
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    lam: float = 20.0
    distance: Literal["l2", "l1", "cosine"] = "l2"
    normalize: bool = False
    reduction: Literal["mean", "sum"] = "mean"
    optimizer: Literal["adam", "sgd", "adamw"] = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    augment: str = "flip+jitter+gray"
    query_aug: bool = False
    query_batch_size: int = 256
    seed: int = 0
    checkpoint_every: int = 10
    amp: bool = True
    cuda_graph: bool = True  # on CUDA, capture the whole training step as one CUDA graph


def to_uint8(images01: torch.Tensor) -> torch.Tensor:
    return images01.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def train_stolen_encoder(
    images: torch.Tensor,
    target_features: torch.Tensor,
    config: StealConfig | dict | None = None,
    *,
    device: torch.device | str | None = None,
    query_augmented: Callable[[torch.Tensor], torch.Tensor] | None = None,
    state_path: str | Path | None = None,
    progress: bool = True,
    loss_fn: Callable | None = None,
) -> tuple[Encoder, list[dict]]:
    """Train f_s on (images uint8 N×3×H×W, target_features N×D) -> (stolen encoder on CPU, per-epoch log).

    query_augmented: for query-aug, a function uint8 N×3×H×W -> (N×D answers, queries billed) that asks
        the target for A(x); the billed count of each epoch is kept in the log ("aug_queries").
    state_path: resumable train state (saved every `checkpoint_every` epochs and at the end).
    loss_fn(target, stolen_clean, stolen_aug, target_aug) -> (L, L1, L2); default Eq. (7).
    """
    cfg = config if isinstance(config, StealConfig) else StealConfig(**(config or {}))
    device = pick_device(device)
    seed_everything(cfg.seed)
    n, dim = target_features.shape
    if len(images) != n:
        raise ValueError(f"{len(images)} images but {n} target feature vectors")
    if n < cfg.batch_size:
        raise ValueError(f"surrogate set of {n} images is smaller than one batch ({cfg.batch_size}); lower batch_size")
    encoder = build_encoder(cfg.arch, input_size=images.shape[-1], out_dim=dim)
    model = prepare_model(encoder, device).train()
    use_graph = cfg.cuda_graph and device.type == "cuda"
    opt = make_optimizer(model.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, device, capturable=use_graph)
    if loss_fn is None:

        def loss_fn(t, fc, fa, ta):
            return stolen_encoder_loss(t, fc, fa, cfg.lam, cfg.distance, cfg.normalize, cfg.reduction, target_aug=ta)

    state = TrainState(state_path)
    start, log, _ = state.load({"encoder": model}, opt, map_location=device)
    X = images.to(device)
    T = target_features.to(device).float()
    use_aug = cfg.lam > 0 or query_augmented is not None
    aug = Augmenter(cfg.augment, images.shape[-1]).to(device) if use_aug else None
    steps = n // cfg.batch_size  # Algorithm 1, line 8: floor(|D|/S) mini-batches per epoch

    def body(x, t, xa=None, ta=None):
        """x uint8 S×3×H×W, t S×D answers, xa A(x) (float [0,1] or uint8), ta f_t(A(x)) -> (L, [L, L1, L2])."""
        with autocast(device, cfg.amp, cache=not use_graph):
            if xa is not None:
                both = torch.cat([x.float() / 255.0, xa.float() / 255.0 if xa.dtype == torch.uint8 else xa])
                fc, fa = model(both).float().chunk(2)
            else:
                fc, fa = model(x).float(), None
        loss, l1, l2 = loss_fn(t, fc, fa, ta)
        return loss, torch.stack([loss.detach(), l1.detach(), l2.detach()])

    step = TrainStep(model, opt, body, use_graph=use_graph)
    bar = tqdm(range(start, cfg.epochs), desc=f"steal {cfg.arch}", unit="ep", disable=not progress, initial=start, total=cfg.epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        seed_epoch(cfg.seed, epoch)
        perm = torch.randperm(n, generator=epoch_generator(cfg.seed, epoch)).to(device)
        A = TA = None
        billed = 0
        if use_aug:
            A = aug.apply_all(X)
            if query_augmented is not None:
                A = to_uint8(A)
                TA, billed = query_augmented(A.cpu())
                TA = TA.to(device).float()
        sums = torch.zeros(3, device=device)
        for i in range(steps):
            idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            batch = [X[idx], T[idx]] + ([A[idx]] if A is not None else []) + ([TA[idx]] if TA is not None else [])
            sums += step(*batch)
        means = (sums / max(steps, 1)).tolist()
        log.append({"epoch": epoch + 1, "loss": means[0], "l1": means[1], "l2": means[2], "aug_queries": billed, "seconds": time.perf_counter() - t0})
        bar.set_postfix(loss=f"{means[0]:.4f}")
        if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
            state.save({"encoder": model}, opt, epoch + 1, log)
    model.eval()
    return encoder.cpu().eval(), log


def aug_billing_path(state_path: str | Path) -> Path:
    return Path(state_path).with_name(Path(state_path).stem + ".aug_billing.jsonl")


def record_billing(path: Path, billed: int) -> None:
    """Append one call's paid augmented queries, flushed to disk before training on the answers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps({"billed": int(billed), "time": time.time()}) + "\n")
        f.flush()
        os.fsync(f.fileno())


def billed_aug_queries(path: Path) -> int | None:
    """Every augmented query paid, in every attempt of the run (a crashed one included); None if no record."""
    if not path.exists():
        return None
    return sum(json.loads(line)["billed"] for line in path.read_text().splitlines() if line.strip())


def cached_query(target, images: torch.Tensor, cache: Path | None, batch_size: int, progress: bool) -> tuple[torch.Tensor, int, int]:
    """Answers for `images`, from `cache` (safetensors) when present -> (features, billed, newly billed)."""
    if cache is not None and cache.exists():
        blob = load_file(str(cache))
        if blob["images"].shape == images.shape and torch.equal(blob["images"], images):
            return blob["features"], int(blob["billed"].item()), 0
    before = target.queries
    feats = query_target(target, images, batch_size, progress)
    billed = target.queries - before
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file({"images": images.contiguous(), "features": feats.contiguous(), "billed": torch.tensor([billed])}, str(cache))
    return feats, billed, billed


@register_attack("stolenencoder")
class StolenEncoder(Attack):
    """Algorithm 1. Spends exactly |D| queries (query_aug: (e+1)·|D|)."""

    Config = StealConfig

    def loss_fn(self):
        """The `train_stolen_encoder` loss hook; None = Eq. (7). Attacks with other losses override it."""
        return None

    def steal(self, target, surrogate, *, device=None, workdir=None, progress=True) -> StealResult:
        """Query once per surrogate image (answers cached in workdir), then train; returns the billed total."""
        cfg = self.config
        workdir = Path(workdir) if workdir else None
        t0 = time.perf_counter()
        feats, billed, new = cached_query(target, surrogate.images, workdir / "queries.safetensors" if workdir else None, cfg.query_batch_size, progress)
        query_seconds = time.perf_counter() - t0

        state_path = workdir / "train_state.pt" if workdir else None
        billing = aug_billing_path(state_path) if state_path else None

        def query_augmented(batch: torch.Tensor) -> tuple[torch.Tensor, int]:
            """f_t(A(x)) for one epoch. What the target billed is written down even if the call or the
            process fails afterwards: a resumed run re-pays the epochs after its last checkpoint, and the
            report counts both payments (`billed_aug_queries`)."""
            before = target.queries
            try:
                out = query_target(target, batch, cfg.query_batch_size)
            finally:
                if billing is not None and target.queries > before:
                    record_billing(billing, target.queries - before)
            return out, target.queries - before

        t1 = time.perf_counter()
        encoder, log = train_stolen_encoder(
            surrogate.images,
            feats,
            cfg,
            device=device,
            query_augmented=query_augmented if cfg.query_aug else None,
            state_path=state_path,
            progress=progress,
            loss_fn=self.loss_fn(),
        )
        recorded = billed_aug_queries(billing) if billing is not None and cfg.query_aug else None
        aug_queries = recorded if recorded is not None else sum(int(e.get("aug_queries", 0)) for e in log)
        return StealResult(
            encoder=encoder,
            queries=billed + aug_queries,
            log=log,
            query_seconds=query_seconds,
            train_seconds=time.perf_counter() - t1,
            info={"attack": self.name, "surrogate": surrogate.name, "surrogate_size": len(surrogate), "queries_from_cache": billed - new, "config": cfg.model_dump()},
        )


@register_attack("stolenencoder-wo-aug")
class StolenEncoderWithoutAug(StolenEncoder):
    """Table X baseline: only L1 (λ = 0), i.e. classifier-style stealing with features as labels."""

    def __init__(self, config=None, **overrides):
        super().__init__(config, **{"lam": 0.0, **overrides})


@register_attack("stolenencoder-query-aug")
class StolenEncoderQueryAug(StolenEncoder):
    """Table X variant: queries f_t(A(x)) every epoch (Eq. 5); (e+1)·|D| queries, reported truthfully."""

    def __init__(self, config=None, **overrides):
        super().__init__(config, **{"query_aug": True, **overrides})
