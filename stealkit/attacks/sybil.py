"""Multi-account (sybil) stealing, registered "sybil": spread the queries over several accounts (API keys)
so that no single account looks like a thief to a per-account defence (B4B: Dubiński, Pawlak, Boenisch, Trzciński, Dziedzic, "Bucks for
Buckets (B4B): Active Defenses Against Stealing Encoders", NeurIPS 2023, arXiv:2310.08571, Section 5 evaluates exactly this adaptive attacker; its released code maps every sybil's answers
into the first account's space before training).

`steal(targets, surrogate)`: `targets` is a list of Targets, one per account (e.g. several
RemoteTarget(url, key), or LocalTargets sharing one defence with different `account`s); a single
Target is one account. The surrogate set D is split into len(targets) disjoint shards ("contiguous"
or "round-robin"), each asked once through its own account. When accounts answer in different
spaces (B4B's per-account transformations), the first `overlap` images are also asked through every
other account, and a map from each account's answers to account 0's is fitted on them
("affine": least squares y0 ≈ [y_j, 1]·W; "orthogonal": Procrustes rotation + scale + shift; "none").
Queries: |D| + overlap·(accounts − 1), reported per account in `info["per_account_queries"]`.
Training then runs through the shared trainer on the mapped answers: `loss` picks the objective
(default "cont-steal": Cont-Steal's one-sided InfoNCE on f_s(A(x)) vs f_t(x), as `cont-steal-fixed-view`;
"mse", "infonce", "softnn", "wasserstein" on the same views; "stolenencoder" = Eq. 7).
Shapes: surrogate uint8 N×3×H×W, answers N×D -> stolen encoder N×3×H×W -> N×D.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator

from stealkit.attacks.base import register_attack
from stealkit.attacks.query_train import QueryTrainAttack
from stealkit.attacks.queries import cached_query
from stealkit.attacks.steal_config import TrainConfig
from stealkit.losses.base import build_loss

PAIR_LOSS = {"cont-steal": "cont-steal-anchor", "mse": "mse", "infonce": "infonce", "softnn": "softnn", "wasserstein": "wasserstein"}


class SybilConfig(TrainConfig):
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    weight_decay: float = Field(0.0, ge=0)
    loss: Literal["cont-steal", "mse", "infonce", "softnn", "wasserstein", "stolenencoder"] = "cont-steal"
    temperature: float | None = Field(None, gt=0)  # None: the loss's own default
    lam: float | None = Field(None, ge=0)  # loss "stolenencoder" only; None: 20, the paper's λ
    overlap: int = Field(0, ge=0)  # images asked through every account to align their answer spaces
    align: Literal["affine", "orthogonal", "none"] = "affine"
    split: Literal["contiguous", "round-robin"] = "contiguous"
    accounts: int = Field(1, ge=1)  # given one LocalTarget (e.g. from an experiment config), ask through this many of its accounts

    @model_validator(mode="after")
    def _lam_only_for_eq7(self):
        if self.lam is not None and self.loss != "stolenencoder":
            raise ValueError(f"lam is a setting of loss 'stolenencoder', not of {self.loss!r}")
        return self

    def describe(self) -> str:
        return f"{self.accounts if self.accounts > 1 else 'given'} accounts, loss {self.loss}; {super().describe()}"


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
class Sybil(QueryTrainAttack):
    """Queries spread over several accounts; answers aligned to account 0; trained with `loss`."""

    Config = SybilConfig

    def make_loss(self):
        cfg = self.config
        if cfg.loss == "stolenencoder":
            return build_loss("stolenencoder", {"lam": 20.0 if cfg.lam is None else cfg.lam})
        own = {"temperature": cfg.temperature} if cfg.temperature is not None and cfg.loss in ("cont-steal", "infonce", "softnn") else {}
        return build_loss(PAIR_LOSS[cfg.loss], own, stolen_view="aug", target_view="clean")

    def fan_out(self, target) -> list:
        """One target -> `accounts` targets: copies of a LocalTarget under accounts "<account>#j" that share
        its encoder and defence (so per-account defence state sees several callers); each has its own budget."""
        import copy

        from stealkit.targets.local import LocalTarget

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

    def answers(self, target, surrogate, workdir: Path | None, progress: bool):
        """Each account asks for its shard (and the overlap); other accounts' answers mapped into account 0's."""
        cfg = self.config
        targets = list(target) if isinstance(target, (list, tuple)) else self.fan_out(target)
        k, n = len(targets), len(surrogate)
        if cfg.overlap > n:
            raise ValueError(f"overlap {cfg.overlap} is larger than the surrogate set ({n})")
        images = surrogate.images
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
        return feats, sum(billed), new_billed, {"accounts": k, "per_account_queries": billed, "aligned_accounts": aligned}
