"""Multi-account (sybil) stealing, registered "sybil": spread the queries over several accounts (API keys)
so that no single account looks like a thief to a per-account defence (B4B, Dubiński et al., NeurIPS
2023, Section 5 evaluates exactly this adaptive attacker; its released code maps every sybil's answers
into the first account's space before training).

`steal(targets, surrogate)`: `targets` is a list of Targets, one per account (e.g. several
RemoteTarget(url, key), or LocalTargets sharing one defence with different `account`s); a single
Target is one account. The surrogate set D is split into len(targets) disjoint shards ("contiguous"
or "round-robin"), each asked once through its own account. When accounts answer in different
spaces (B4B's per-account transformations), the first `overlap` images are also asked through every
other account, and a map from each account's answers to account 0's is fitted on them
("affine": least squares y0 ≈ [y_j, 1]·W; "orthogonal": Procrustes rotation + scale + shift; "none").
Queries: |D| + overlap·(accounts − 1), reported per account in `info["per_account_queries"]`.
Training then runs as any loss attack on the mapped answers: `loss` picks the objective
("cont-steal" default; "mse", "infonce", "softnn", "wasserstein", or "stolenencoder" = Eq. 7).
Shapes: surrogate uint8 N×3×H×W, answers N×D -> stolen encoder N×3×H×W -> N×D.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import model_validator

from stealkit.attacks.base import StealResult, register_attack
from stealkit.attacks.loss_steal import LossStealAttack, LossStealConfig, make_loss_fn
from stealkit.attacks.stolen_encoder import cached_query, train_stolen_encoder
from stealkit.losses import stolen_encoder_loss
from stealkit.losses_stealing import STEALING_LOSSES

DEFAULT_TEMPERATURE = {"infonce": 0.07, "softnn": 100.0, "cont-steal": 0.1}


class SybilConfig(LossStealConfig):
    loss: Literal["cont-steal", "mse", "infonce", "softnn", "wasserstein", "stolenencoder"] = "cont-steal"
    temperature: float | None = None  # None: the loss's own default
    overlap: int = 0  # images asked through every account to align their answer spaces
    align: Literal["affine", "orthogonal", "none"] = "affine"
    split: Literal["contiguous", "round-robin"] = "contiguous"
    accounts: int = 1  # given one LocalTarget (e.g. from an experiment config), ask through this many of its accounts
    lam: float | None = None  # None: 20 (the paper's λ) for loss "stolenencoder", else 1 (the loss attacks' default)

    @model_validator(mode="after")
    def _default_lam(self):
        if self.lam is None:
            self.lam = 20.0 if self.loss == "stolenencoder" else 1.0
        return self


def fit_alignment(source: torch.Tensor, reference: torch.Tensor, kind: str = "affine"):
    """A map f with f(source) ≈ reference, fitted on paired answers M×D (same images) -> callable N×D -> N×D."""
    src, ref = source.double(), reference.double()
    if kind == "none":
        return lambda y: y
    if kind == "affine":
        a = torch.cat([src, torch.ones(len(src), 1, dtype=src.dtype)], 1)
        w = torch.linalg.lstsq(a, ref, driver="gelsd").solution
        return lambda y: (torch.cat([y.double(), torch.ones(len(y), 1, dtype=torch.float64)], 1) @ w).float()
    if kind == "orthogonal":
        ms, mr = src.mean(0), ref.mean(0)
        u, s, vt = torch.linalg.svd((src - ms).t() @ (ref - mr))
        rot = u @ vt
        scale = s.sum() / (src - ms).pow(2).sum().clamp_min(1e-12)
        return lambda y: ((y.double() - ms) @ rot * scale + mr).float()
    raise ValueError(f"unknown alignment {kind!r}; choose affine, orthogonal or none")


@register_attack("sybil")
class Sybil(LossStealAttack):
    """Queries spread over several accounts; answers aligned to account 0; trained with `loss`."""

    Config = SybilConfig

    def pair_loss(self, stolen, target):
        cfg = self.config
        fn = STEALING_LOSSES[cfg.loss]
        if cfg.loss in DEFAULT_TEMPERATURE:
            return fn(stolen, target, cfg.temperature if cfg.temperature is not None else DEFAULT_TEMPERATURE[cfg.loss])
        return fn(stolen, target)

    def loss_fn(self):
        cfg = self.config
        if cfg.loss == "stolenencoder":
            return lambda t, fc, fa, ta: stolen_encoder_loss(t, fc, fa, cfg.lam, cfg.distance, cfg.normalize, cfg.reduction)
        return make_loss_fn(self.pair_loss, cfg.lam, cfg.clean_weight)

    def fan_out(self, target) -> list:
        """One target -> `accounts` targets: copies of a LocalTarget under accounts "<account>#j" that share
        its encoder and defence (so per-account defence state sees several callers); each has its own budget."""
        import copy

        from stealkit.targets.local import LocalTarget

        if self.config.accounts < 1:
            raise ValueError(f"accounts must be >= 1, got {self.config.accounts}")
        if self.config.accounts == 1:
            return [target]
        if not isinstance(target, LocalTarget):
            raise ValueError("sybil with accounts > 1 needs a list of targets (one per API key) or a LocalTarget to fan out")
        out = []
        for j in range(self.config.accounts):
            t = copy.copy(target)
            t.account, t.queries = f"{target.account}#{j}", 0
            out.append(t)
        return out

    def shards(self, n: int, accounts: int) -> list[torch.Tensor]:
        """Indices of the images each account asks for (beyond the overlap, which account 0 owns)."""
        cfg = self.config
        rest = torch.arange(cfg.overlap, n)
        if cfg.split == "round-robin":
            parts = [rest[j::accounts] for j in range(accounts)]
        else:
            parts = list(torch.tensor_split(rest, accounts))
        parts[0] = torch.cat([torch.arange(cfg.overlap), parts[0]])
        return parts

    def steal(self, target, surrogate, *, device=None, workdir=None, progress=True) -> StealResult:
        cfg = self.config
        if cfg.query_aug:
            raise ValueError("sybil does not support query_aug")
        targets = list(target) if isinstance(target, (list, tuple)) else self.fan_out(target)
        k, n = len(targets), len(surrogate)
        if cfg.overlap > n:
            raise ValueError(f"overlap {cfg.overlap} is larger than the surrogate set ({n})")
        workdir = Path(workdir) if workdir else None
        images = surrogate.images
        t0 = time.perf_counter()
        feats, billed, new_billed, aligned = None, [], 0, []
        for j, (tgt, idx) in enumerate(zip(targets, self.shards(n, k))):
            ask = idx if j == 0 else torch.cat([torch.arange(cfg.overlap), idx])
            cache = workdir / f"queries_account{j}.safetensors" if workdir else None
            answers, b, new = cached_query(tgt, images[ask].contiguous(), cache, cfg.query_batch_size, progress)
            billed.append(b)
            new_billed += new
            if feats is None:
                feats = torch.zeros(n, answers.shape[1])
            if j == 0:
                feats[ask] = answers
                continue
            own = answers[cfg.overlap :]
            if cfg.overlap > 0 and cfg.align != "none":
                mapping = fit_alignment(answers[: cfg.overlap], feats[: cfg.overlap], cfg.align)
                own = mapping(own)
                aligned.append(j)
            feats[idx] = own
        query_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        encoder, log = train_stolen_encoder(
            images,
            feats,
            cfg,
            device=device,
            state_path=workdir / "train_state.pt" if workdir else None,
            progress=progress,
            loss_fn=self.loss_fn(),
        )
        return StealResult(
            encoder=encoder,
            queries=sum(billed),
            log=log,
            query_seconds=query_seconds,
            train_seconds=time.perf_counter() - t1,
            info={
                "attack": self.name,
                "accounts": k,
                "per_account_queries": billed,
                "aligned_accounts": aligned,
                "surrogate": surrogate.name,
                "surrogate_size": n,
                "queries_from_cache": sum(billed) - new_billed,
                "config": cfg.model_dump(),
            },
        )
