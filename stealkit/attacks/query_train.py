"""The query-and-train attack: ask the target once per surrogate image (when the loss compares with
f_t(x)), then train a fresh stolen encoder with the attack's loss; when the loss compares with f_t(A(x)),
the target is asked for the augmented images every epoch and each payment is journaled at once.

A concrete attack is a `Config` (a `TrainConfig` plus its loss's settings) and `make_loss()`.
Queries billed: |D| for the clean view, plus e·|D| for the augmented view (StolenEncoder-query-aug:
(e+1)·|D|; Cont-Steal's released protocol: e·|D|). A rerun in the same workdir pays nothing again.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from stealkit.attacks.base import Attack, StealResult
from stealkit.attacks.queries import BillingJournal, cached_query, paying_query
from stealkit.attacks.steal_config import TrainConfig
from stealkit.attacks.trainer import train_stolen_encoder
from stealkit.losses.base import StealLoss


class QueryTrainAttack(Attack):
    Config = TrainConfig

    def make_loss(self) -> StealLoss:
        raise NotImplementedError

    def answers(self, target, surrogate, workdir: Path | None, progress: bool) -> tuple[torch.Tensor, int, int, dict]:
        """f_t(x) for every surrogate image -> (answers N×D, billed, newly billed, info). Sybil overrides it."""
        cache = workdir / "queries.safetensors" if workdir else None
        feats, billed, new = cached_query(target, surrogate.images, cache, self.config.query_batch_size, progress)
        return feats, billed, new, {}

    def steal(self, target, surrogate, *, device=None, workdir=None, progress=True) -> StealResult:
        cfg = self.config
        loss = self.make_loss()
        workdir = Path(workdir) if workdir else None
        t0 = time.perf_counter()
        feats, billed, new, extra = (None, 0, 0, {})
        if "clean" in loss.target_views:
            feats, billed, new, extra = self.answers(target, surrogate, workdir, progress)
        query_seconds = time.perf_counter() - t0
        state_path = workdir / "train_state.pt" if workdir else None
        journal = BillingJournal(state_path.with_name("train_state.aug_billing.jsonl") if state_path else None)
        t1 = time.perf_counter()
        encoder, log = train_stolen_encoder(
            surrogate.images, feats, cfg, loss, feature_dim=_first(target).feature_dim, device=device,
            query_augmented=paying_query(_first(target), cfg.query_batch_size, journal) if "aug" in loss.target_views else None,
            state_path=state_path, progress=progress,
        )
        aug_queries = 0
        if "aug" in loss.target_views:
            recorded = journal.total()
            aug_queries = recorded if recorded is not None else sum(int(e.get("aug_queries", 0)) for e in log)
        return StealResult(
            encoder=encoder,
            queries=billed + aug_queries,
            log=log,
            query_seconds=query_seconds,
            train_seconds=time.perf_counter() - t1,
            info={"attack": self.name, "surrogate": surrogate.name, "surrogate_size": len(surrogate),
                  "queries_from_cache": billed - new, "aug_queries": aug_queries, "settings": self.describe(),
                  "config": cfg.model_dump(), **extra},
        )


def _first(target):
    return target[0] if isinstance(target, (list, tuple)) else target
