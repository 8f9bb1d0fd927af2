"""Training a stolen encoder from a target's answers with any stealing loss (the shared trainer of every
query-and-train attack: StolenEncoder, Cont-Steal, the ICML'22 losses, sybil).

Per epoch: one fresh augmentation A(x) of every surrogate image (when the loss has an "aug" view), a
second, independent draw A'(x) of the same augmenter (when the stolen encoder has the "aug2" view), the
target asked for f_t(A(x)) of exactly the A(x) images (only when the loss needs it: e·|D| queries), then
⌊|D|/S⌋ mini-batches (StolenEncoder Algorithm 1, line 8). Each view goes through the stolen encoder in
its own forward pass, as the authors' code does (BatchNorm statistics per view). GPU-resident data, one
CUDA graph per step on CUDA, bf16 autocast where `runtime.bf16_enabled`, NHWC where it is faster.
Resumable: the train state is saved every `checkpoint_every` epochs; every random draw of epoch e comes
from (seed, e), so a resumed run gives the weights of an uninterrupted one.
Shapes: images uint8 N×3×H×W; answers float N×D; the stolen encoder maps N×3×H×W -> N×D.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from stealkit.attacks.steal_config import StealConfig, TrainConfig
from stealkit.augment import Augmenter
from stealkit.augment_ops import to_uint8
from stealkit.graph_step import TrainStep
from stealkit.losses.base import StealLoss
from stealkit.losses.stolen_encoder import StolenEncoderLoss
from stealkit.models.encoder import Encoder, build_encoder
from stealkit.runtime import autocast, pick_device, seed_everything
from stealkit.training import TrainState, epoch_generator, make_optimizer, prepare_model, seed_epoch


# stolen x, stolen A(x), stolen A'(x) (a second, independent draw), target x, target A(x) (in that order)
INPUTS = ("x", "xa", "xa2", "t", "ta")


def train_stolen_encoder(
    images: torch.Tensor,
    answers: torch.Tensor | None,
    config: TrainConfig | dict | None,
    loss: StealLoss | None = None,
    *,
    feature_dim: int | None = None,
    device: torch.device | str | None = None,
    query_augmented: Callable[[torch.Tensor], tuple[torch.Tensor, int]] | None = None,
    state_path: str | Path | None = None,
    progress: bool = True,
) -> tuple[Encoder, list[dict]]:
    """Train a fresh f_s -> (stolen encoder on CPU, per-epoch log of loss, l1, l2, aug_queries, seconds).

    answers: f_t(x) N×D, or None when the loss does not use the clean target view (give `feature_dim`).
    config: a TrainConfig; a subclass with `fc: True` (Cont-Steal) gets a Linear layer on the pooled features.
    loss: a StealLoss; None = StolenEncoder's Eq. (7) with the config's lam/distance/normalize/reduction.
    query_augmented(uint8 N×3×H×W) -> (f_t(A(x)) N×D, queries billed): asked every epoch when the loss
        has the target view "aug"; the billed count of each epoch is logged ("aug_queries").
    """
    if config is None or isinstance(config, dict):
        config = StealConfig(**(config or {}))
    cfg = config
    if loss is None:
        fields = StolenEncoderLoss.Config.model_fields
        loss = StolenEncoderLoss({k: getattr(cfg, k) for k in fields if hasattr(cfg, k)})
    sv, tv = loss.stolen_views, loss.target_views
    if "aug2" in tv:
        raise ValueError("the target is asked for one augmented view per image per epoch ('aug'); 'aug2' is a view "
                         "of the stolen encoder only")
    if "aug" in tv and query_augmented is None:
        raise ValueError("this loss compares with f_t(A(x)): give query_augmented (a function that asks the target)")
    if "clean" in tv and answers is None:
        raise ValueError("this loss compares with f_t(x): give the target's answers")
    device = pick_device(device)
    seed_everything(cfg.seed)
    n = len(images)
    dim = answers.shape[1] if answers is not None else feature_dim
    if dim is None:
        raise ValueError("feature_dim is needed when no answers are given")
    if answers is not None and len(answers) != n:
        raise ValueError(f"{n} images but {len(answers)} target feature vectors")
    if n < cfg.batch_size:
        raise ValueError(f"surrogate set of {n} images is smaller than one batch ({cfg.batch_size}); lower batch_size "
                         f"or use more surrogate images")
    encoder = build_encoder(cfg.arch, input_size=cfg.input_size or images.shape[-1], cifar_stem=cfg.cifar_stem, out_dim=dim,
                            fc=bool(getattr(cfg, "fc", False)))  # `fc`: a setting of the configs that have it (Cont-Steal)
    model = prepare_model(encoder, device).train()
    use_graph = cfg.cuda_graph and device.type == "cuda"
    opt = make_optimizer(model.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, device, capturable=use_graph)
    state = TrainState(state_path)
    start, log, _ = state.load({"encoder": model}, opt, map_location=device)
    X = images.to(device)
    T = answers.to(device).float() if answers is not None else None
    needs_aug, needs_aug2 = "aug" in sv or "aug" in tv, "aug2" in sv
    aug = Augmenter(cfg.augment, images.shape[-1]).to(device) if needs_aug or needs_aug2 else None
    used = [k for k, on in zip(INPUTS, ("clean" in sv, "aug" in sv, "aug2" in sv, "clean" in tv, "aug" in tv)) if on]
    steps = n // cfg.batch_size  # Algorithm 1, line 8: floor(|D|/S) mini-batches per epoch

    def body(*tensors):
        """The batch's views (in INPUTS order, only those used) -> (L, [L, L1, L2])."""
        got = dict(zip(used, tensors))
        stolen = {}
        with autocast(device, cfg.amp, cache=not use_graph):
            if "x" in got:
                stolen["clean"] = model(got["x"]).float()
            if "xa" in got:
                stolen["aug"] = model(got["xa"]).float()
            if "xa2" in got:
                stolen["aug2"] = model(got["xa2"]).float()
        target = {k: got[key] for k, key in (("clean", "t"), ("aug", "ta")) if key in got}
        total, l1, l2 = loss(stolen, target)
        return total, torch.stack([total.detach(), l1.detach(), l2.detach()])

    step = TrainStep(model, opt, body, use_graph=use_graph)
    bar = tqdm(range(start, cfg.epochs), desc=f"steal {cfg.arch}", unit="ep", disable=not progress, initial=start, total=cfg.epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        seed_epoch(cfg.seed, epoch)
        perm = torch.randperm(n, generator=epoch_generator(cfg.seed, epoch)).to(device)
        A = A2 = TA = None
        billed = 0
        if needs_aug:
            A = aug.apply_all(X)
        if needs_aug2:  # drawn before the target is asked, so a resumed epoch draws the same A'(x)
            A2 = aug.apply_all(X)
        if "aug" in tv:  # the target sees A(x): the very images of the stolen "aug" view, where there is one
            A = to_uint8(A)
            TA, billed = query_augmented(A.cpu())
            TA = TA.to(device).float()
        full = {"x": X, "xa": A, "xa2": A2, "t": T, "ta": TA}
        sums = torch.zeros(3, device=device)
        for i in range(steps):
            idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            sums += step(*[full[k][idx] for k in used])
        means = (sums / max(steps, 1)).tolist()
        log.append({"epoch": epoch + 1, "loss": means[0], "l1": means[1], "l2": means[2], "aug_queries": billed,
                    "seconds": time.perf_counter() - t0})
        bar.set_postfix(loss=f"{means[0]:.4f}")
        if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
            state.save({"encoder": model}, opt, epoch + 1, log)
    model.eval()
    return encoder.cpu().eval(), log
