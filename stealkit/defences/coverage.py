"""Coverage-based defence in the spirit of B4B (Dubiński, Pawlak, Boenisch, Trzciński, Dziedzic,
"Bucks for Buckets (B4B): Active Defenses Against Stealing Encoders", NeurIPS 2023), registered "coverage".

Three parts, as in B4B:
1. Coverage: every answered embedding f (the victim's, before any change) is hashed into one of
   2^num_planes locality-sensitive buckets by random hyperplanes (SimHash: bit k = [(f − c)·h_k > 0],
   h_k ~ N(0, I), seeded; c a centre, 0 unless `calibrate` set it from the provider's data). An
   account's coverage is the fraction of buckets its queries have hit so far. Honest users solve a
   narrow task and stay in a few buckets; a thief sweeps the input space and covers many.
2. Calibrated noise: each answer gets Gaussian noise whose std grows with the account's coverage c
   *after* that query (per query, in order, within a batch):
       "exp" (B4B's curve):  σ(c) = λ·((α/λ)^(c/β) − 1)    (σ(0)=0, σ(β)=α−λ, exponential growth)
       "linear":             σ(c) = α·c/β
       "none":               σ(c) = 0                     (transformations only)
   With `relative=True` (default) σ is in units of the answer's RMS entry ‖f‖/√D, else absolute.
3. Per-account transformation of the (noised) answer, fixed per account and secret, so answers
   from several accounts (sybils) do not live in one space: "affine" y = s·(x Q) + b with a random
   orthogonal Q, scale s ∈ [0.5, 2] and bias b ~ N(0, bias_scale²); "rotation" y = x Q;
   "shuffle" a signed permutation; "none". Derived from sha256(secret, account): nothing to store.

State: per-account query counts and the set of hit buckets live in a database (`db_path`: a SQLite
path or ":memory:" (the default), or a sqlite:/// or postgresql:// URL), in tables prefixed `b4b_` so
they can share the service's ledger database; `stealkit serve` puts them there, so every worker and host
sees one state per account. Each call updates an account's state in one transaction (the account's row
locked), so concurrent calls never lose a query or a bucket. The state (and the centre) survives
restarts, and the hashing parameters are checked on reopening.
Shapes: features float N×D (D fixed at the first call), images ignored -> float N×D.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from stealkit.defences.base import Defence, DefenceConfig, register_defence
from stealkit.runtime import derived_seed
from stealkit.db import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS b4b_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS b4b_accounts (account TEXT PRIMARY KEY, queries {int} NOT NULL);
CREATE TABLE IF NOT EXISTS b4b_buckets (
    account TEXT NOT NULL, bucket {int} NOT NULL, PRIMARY KEY (account, bucket)
){without_rowid}
"""
UPSERT_META = "INSERT INTO b4b_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
CURVES = ("exp", "linear", "none")
TRANSFORMS = ("affine", "rotation", "shuffle", "none")


def noise_curve(coverage: np.ndarray | float, curve: str = "exp", alpha: float = 1.0, beta: float = 0.5, lam: float = 0.01):
    """σ as a function of the covered fraction c ∈ [0, 1] (see the module docstring). Vectorised."""
    c = np.asarray(coverage, dtype=np.float64)
    if curve == "exp":
        return np.maximum(lam * (np.power(alpha / lam, c / beta) - 1.0), 0.0)
    if curve == "linear":
        return alpha * c / beta
    if curve == "none":
        return np.zeros_like(c)
    raise ValueError(f"unknown noise curve {curve!r}; choose from {CURVES}")


class CoverageConfig(DefenceConfig):
    num_planes: int = Field(12, ge=1, le=40)  # 2^num_planes LSH buckets
    db_path: str = ":memory:"  # where per-account state lives (a SQLite path, ":memory:", or a database URL)
    curve: Literal["exp", "linear", "none"] = "exp"
    alpha: float = Field(1.0, ge=0)
    beta: float = Field(0.5, gt=0)
    lam: float = Field(0.01, ge=0)
    relative: bool = True
    transform: Literal["affine", "rotation", "shuffle", "none"] = "affine"
    bias_scale: float = Field(1.0, ge=0)
    secret: str = "stealkit-b4b"
    seed: int = 0


@register_defence("coverage")
class CoverageDefence(Defence):
    Config = CoverageConfig

    def identity(self) -> dict:
        """The settings without where the state is stored nor the secret (which must not leave the server)."""
        out = super().identity()
        out.pop("db_path", None)
        out["secret"] = hashlib.sha256(self.config.secret.encode()).hexdigest()[:16]
        return out

    def __init__(
        self,
        num_planes: int = 12,
        db_path: str = ":memory:",
        curve: str = "exp",
        alpha: float = 1.0,
        beta: float = 0.5,
        lam: float = 0.01,
        relative: bool = True,
        transform: str = "affine",
        bias_scale: float = 1.0,
        secret: str = "stealkit-b4b",
        seed: int = 0,
    ):
        self.config = CoverageConfig(num_planes=num_planes, db_path=str(db_path), curve=curve, alpha=alpha, beta=beta, lam=lam,
                                     relative=relative, transform=transform, bias_scale=bias_scale, secret=secret, seed=seed)
        if not 1 <= int(num_planes) <= 40:
            raise ValueError(f"num_planes must be in [1, 40], got {num_planes}")
        if curve not in CURVES:
            raise ValueError(f"unknown noise curve {curve!r}; choose from {CURVES}")
        if transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {transform!r}; choose from {TRANSFORMS}")
        if curve == "exp" and not (alpha > lam > 0 and beta > 0):
            raise ValueError(f"the exp curve needs alpha > lam > 0 and beta > 0, got alpha={alpha}, lam={lam}, beta={beta}")
        self.num_planes, self.curve = int(num_planes), curve
        self.alpha, self.beta, self.lam, self.relative = float(alpha), float(beta), float(lam), bool(relative)
        self.transform_kind, self.bias_scale, self.secret, self.seed = transform, float(bias_scale), str(secret), int(seed)
        self.db_path = str(db_path)
        self._db = Database.open(self.db_path)
        self._db.create(SCHEMA)
        self.feature_dim: int | None = None
        self.planes: torch.Tensor | None = None
        self.center: torch.Tensor | None = None
        self._transforms: dict[str, tuple] = {}
        self._load_meta()

    # ------------------------------------------------------------------ state
    def _params(self) -> dict:
        return {"num_planes": self.num_planes, "seed": self.seed, "feature_dim": self.feature_dim}

    def _load_meta(self) -> None:
        with self._db.read() as tx:
            rows = dict(tx.execute("SELECT key, value FROM b4b_meta").fetchall())
        if "params" in rows:
            stored = json.loads(rows["params"])
            if stored["num_planes"] != self.num_planes or stored["seed"] != self.seed:
                raise ValueError(
                    f"{self.db_path} holds coverage state for num_planes={stored['num_planes']}, seed={stored['seed']}; "
                    f"this defence has num_planes={self.num_planes}, seed={self.seed} (use another db_path or the same settings)"
                )
            self._set_dim(stored["feature_dim"])
        if "center" in rows:
            self.center = torch.tensor(json.loads(rows["center"]), dtype=torch.float32)

    def _set_dim(self, dim: int) -> None:
        if self.feature_dim is not None and self.feature_dim != dim:
            raise ValueError(f"coverage defence set up for {self.feature_dim}-d features, got {dim}-d")
        if self.planes is None:
            self.feature_dim = int(dim)
            g = torch.Generator().manual_seed(derived_seed("planes", self.seed))
            self.planes = torch.randn(self.feature_dim, self.num_planes, generator=g)
            with self._db.transaction() as tx:
                tx.execute(UPSERT_META, ("params", json.dumps(self._params())))

    def calibrate(self, features: torch.Tensor) -> None:
        """Centre the hyperplanes on the mean of the provider's own embeddings (N×D); persisted."""
        self._set_dim(features.shape[1])
        self.center = features.float().mean(0).cpu()
        with self._db.transaction() as tx:
            tx.execute(UPSERT_META, ("center", json.dumps(self.center.tolist())))

    def reset(self, account: str) -> None:
        with self._db.transaction() as tx:
            tx.execute("DELETE FROM b4b_buckets WHERE account = ?", (account,))
            tx.execute("DELETE FROM b4b_accounts WHERE account = ?", (account,))

    # ------------------------------------------------------------------ parts
    @property
    def num_buckets(self) -> int:
        return 2**self.num_planes

    def buckets(self, features: torch.Tensor) -> np.ndarray:
        """LSH bucket ids (int64 N) of float N×D features."""
        self._set_dim(features.shape[1])
        f = features.detach().float().cpu()
        if self.center is not None:
            f = f - self.center
        bits = (f @ self.planes > 0).long()
        return (bits << torch.arange(self.num_planes)).sum(1).numpy()

    def stats(self, account: str) -> dict:
        """{"queries", "buckets", "coverage", "sigma"} of an account so far."""
        with self._db.read() as tx:
            row = tx.execute("SELECT queries FROM b4b_accounts WHERE account = ?", (account,)).fetchone()
            hit = int(tx.execute("SELECT COUNT(*) FROM b4b_buckets WHERE account = ?", (account,)).fetchone()[0])
        cov = hit / self.num_buckets
        return {"queries": row[0] if row else 0, "buckets": hit, "coverage": cov, "sigma": float(self.sigma(cov))}

    def coverage(self, account: str) -> float:
        return self.stats(account)["coverage"]

    def sigma(self, coverage):
        return noise_curve(coverage, self.curve, self.alpha, self.beta, self.lam)

    def _account_transform(self, account: str, dim: int):
        if account not in self._transforms:
            g = torch.Generator().manual_seed(derived_seed("transform", self.secret, account))
            kind = self.transform_kind
            if kind in ("affine", "rotation"):
                q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
                q = (q * torch.sign(torch.diagonal(r))).float()
                if kind == "affine":
                    scale = math.exp(float(torch.empty(()).uniform_(math.log(0.5), math.log(2.0), generator=g)))
                    bias = torch.randn(dim, generator=g) * self.bias_scale
                else:
                    scale, bias = 1.0, torch.zeros(dim)
                self._transforms[account] = (q, scale, bias)
            elif kind == "shuffle":
                perm = torch.randperm(dim, generator=g)
                signs = torch.randint(0, 2, (dim,), generator=g).float() * 2 - 1
                self._transforms[account] = (torch.eye(dim)[perm] * signs, 1.0, torch.zeros(dim))
            else:
                self._transforms[account] = None
        return self._transforms[account]

    def transform(self, features: torch.Tensor, account: str) -> torch.Tensor:
        """The account's fixed map N×D -> N×D (no noise)."""
        t = self._account_transform(account, features.shape[1])
        if t is None:
            return features.float()
        m, scale, bias = t
        return scale * (features.float() @ m.to(features.device)) + bias.to(features.device)

    # ------------------------------------------------------------------ defence
    def __call__(self, features: torch.Tensor, *, images: torch.Tensor | None = None, account: str = "anonymous") -> torch.Tensor:
        if features.ndim != 2:
            raise ValueError(f"expected features N×D, got {tuple(features.shape)}")
        n = len(features)
        if n == 0:
            return features.float()
        ids = self.buckets(features)
        with self._db.transaction() as tx:
            # the account's row first: on PostgreSQL the UPDATE locks it, so concurrent calls for one account queue here
            tx.execute("INSERT INTO b4b_accounts (account, queries) VALUES (?, 0) ON CONFLICT (account) DO NOTHING", (account,))
            before = int(tx.execute("UPDATE b4b_accounts SET queries = queries + ? WHERE account = ? RETURNING queries", (n, account)).fetchall()[0][0]) - n
            hit = {int(b) for (b,) in tx.execute("SELECT bucket FROM b4b_buckets WHERE account = ?", (account,)).fetchall()}
            counts = np.empty(n, dtype=np.int64)
            new = []
            for i, b in enumerate(ids.tolist()):
                if b not in hit:
                    hit.add(b)
                    new.append((account, b))
                counts[i] = len(hit)
            tx.executemany("INSERT INTO b4b_buckets (account, bucket) VALUES (?, ?) ON CONFLICT DO NOTHING", new)
        sig = torch.from_numpy(self.sigma(counts / self.num_buckets)).float()[:, None]
        f = features.detach().float().cpu()
        if self.relative:
            sig = sig * f.norm(dim=1, keepdim=True) / math.sqrt(f.shape[1])
        g = torch.Generator().manual_seed(derived_seed("noise", self.secret, self.seed, account, before))
        noised = f + sig * torch.randn(f.shape, generator=g)
        return self.transform(noised, account).to(features.device)

    def close(self) -> None:
        self._db.close()

    def __repr__(self) -> str:
        return (
            f"CoverageDefence(num_planes={self.num_planes}, curve={self.curve!r}, alpha={self.alpha}, beta={self.beta}, "
            f"lam={self.lam}, transform={self.transform_kind!r}, db_path={self.db_path!r})"
        )
