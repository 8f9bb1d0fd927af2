"""Coverage-based defence of B4B (Dubiński, Pawlak, Boenisch, Trzciński, Dziedzic, "Bucks for Buckets (B4B):
Active Defenses Against Stealing Encoders", NeurIPS 2023, arXiv:2310.08571), registered "coverage".

Three parts, as in B4B:
1. Coverage: every answered embedding f (the victim's, before any change) is hashed by random hyperplanes
   (SimHash) in each of `num_tables` tables of `num_planes` planes: bit k of table t is [(f − c)·h_tk > 0],
   h_tk ~ N(0, I), seeded; c a centre, 0 unless `calibrate` set it from the provider's data. An account's
   coverage is the fraction of a table's 2^num_planes buckets its queries have hit so far, averaged over
   the tables (`coverage_unit: percent` feeds the curve 100× that, as B4B does). Honest users solve a
   narrow task and stay in a few buckets; a thief sweeps the input space and covers many.
2. Calibrated noise: answers get Gaussian noise whose std grows with the account's coverage c:
       "exp" (B4B's curve):  σ(c) = λ·((α/λ)^(c/β) − 1)  = λ·(exp(ln(α/λ)·c/β) − 1), floored at 0
       "linear":             σ(c) = α·c/β
       "ramp":               σ(c) = α·clip((c − onset)/(β − onset), 0, 1)
   "none":               σ(c) = 0                     (transformations only)
   With `rate_reference` (stealkit's coverage rate, `stealkit.defences.coverage_rate`) the curve reads the
   account's coverage divided by the coverage a reference sweep of the provider's own data reaches after as
   many queries, instead of the coverage itself: an honest user with many queries is not mistaken for a thief.
   `noise_per: query`: each answer's σ comes from the coverage *after* that query (in order within a call);
   `noise_per: batch`: one σ for the whole call (one request), from the coverage after all of it (B4B).
   With `relative: true` σ is in units of the answer's RMS entry ‖f‖/√D, else absolute.
3. Per-account transformation of the (noised) answer, fixed per account and secret, so answers from
   several accounts (sybils) do not live in one space. stealkit's: "affine" y = s·(x Q) + b with a random
   orthogonal Q, s ∈ [0.5, 2], b ~ N(0, bias_scale²); "rotation" y = x Q; "shuffle" a signed permutation;
   "none". B4B's released ones: "b4b-affine" y = x ⊙ a + b, a, b ~ U(−1, 1)^D per coordinate;
   "b4b-shuffle-pad" x padded with `pad_dim` (default D) fixed N(0, 1) entries, then the D + pad_dim
   coordinates permuted; "b4b-affine-shuffle-pad" both; "b4b-binary" n = D·binary_relative_dim random
   hyperplanes (normal (−tan θ_1, …, −tan θ_{D−1}, 1), θ ~ U(0, 2π), through a point of [0, 1]^D on a
   1,000-step grid), y_j = [x·w_j > w_j·p_j] ∈ {0, 1}; "b4b-sybil-map" y = x A + B, A ~ U(−1, 1)^{D×D},
   B ~ U(−1, 1)^D (the map the end-to-end sybil experiment applies to a second account's answers).
   Pad and binary change the width (2·D by default; in-process targets and attacks take any width, but
   `stealkit serve` answers D columns, so serve a width-keeping one); every other transform keeps D. All
   are derived from sha256(secret, account): nothing to store.

Presets (`preset`; a setting given explicitly wins over its preset's):
- "stealkit" (the default): 1 table of 12 planes, coverage as a fraction, exp curve α 1, β 0.5, λ 0.01,
  σ relative to the answer's RMS and drawn per query, "affine" transform. It stays the default because
  it is scale-free: its σ means the same on normalised answers (stealkit's API) as on raw features, and
  it needs no calibration to this victim; existing ledgers and configs keep their meaning.
- "b4b-released": B4B's released end-to-end code as exactly as a served API allows: 20 tables of 12
  planes, coverage in percent averaged over the tables, α 0.8, β 80, λ 1e-6 (its argparse defaults; its
  run scripts pass α 1, λ 1e-7), σ absolute on the features the defence receives, one σ per batch (a
  call: one request) from the coverage after that batch, and the "b4b-sybil-map" transform. Where it
  differs from the released code: the released code computes each batch's coverage offline, once, and
  reads batch i's σ at index ⌊i/2⌋ of that curve (`np.repeat(buckets_covered, 2)`, whose name,
  `buckets_256`, suggests coverage computed at twice the stealing batch; with the run scripts' equal batch
  sizes, batch i gets the coverage after batch ⌊i/2⌋), seeds batch i's noise with i alone (public, the same for every account), and
  transforms only the sybil accounts after the first; here σ comes from the coverage after the batch
  itself, the noise seed is derived from the secret, the account and its position in the account's
  stream, and every account has its own map. Its α, β, λ were set for ImageNet SimSiam/DINO features
  (2048-/1536-d, not normalised); on other encoders and on normalised answers σ needs calibrating.

Repeated queries (`noise_seed: stream`, the default): noise is drawn afresh for every call, seeded by (secret, account, the account's query
count before the call), as B4B draws one per batch position. A repeated identical query hits no new
bucket, so its σ is that of the coverage reached, but its noise is a new draw (averaging k repeats
divides σ by √k); replaying an account's whole stream against a fresh state gives bitwise the same answers.
`noise_seed: input` (stealkit's, against the averaging thief of issue 18): each row's noise is seeded by
(secret, account, the row's image bytes, or its exact feature when no image is given), so an account that
asks the same image again gets the same noise direction, the same answer while its coverage stands still,
and nothing to average away; another account, or another image, gets an independent draw. A thief who
changes a pixel per repeat gets fresh draws again; `noise_seed: bucket` seeds by the row's LSH cell (its
bucket in every table) instead, so near-duplicates share the noise too (and so do distinct images that
fall in one cell: the noise becomes a fixed offset per cell and account).

State: per-account query counts and the set of hit buckets (bucket b of table t stored as t·2^num_planes + b)
live in a database (`db_path`: a SQLite path or ":memory:" (the default), or a sqlite:/// or postgresql://
URL), in tables prefixed `b4b_` so they can share the service's ledger database; `stealkit serve` puts them
there, so every worker and host sees one state per account. Each call updates an account's state in one
transaction (the account's row locked), so concurrent calls never lose a query or a bucket. The state
(and the centre) survives restarts, and the hashing parameters are checked on reopening. `read_coverage(db)`
reads every account's coverage from such a database with the stored parameters, no defence needed (the
operator's view: `stealkit accounts`, `/metrics`); `stats` and it share one computation.
Shapes: features float N×D (D fixed at the first call), images ignored -> float N×D (N×D' for pad/binary).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from stealkit.defences.base import Defence, DefenceConfig, register_defence
from stealkit.runtime import derived_seed
from stealkit.db import Database
from stealkit.defences.coverage_rate import load_reference, reference_coverage

SCHEMA = """
CREATE TABLE IF NOT EXISTS b4b_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS b4b_accounts (account TEXT PRIMARY KEY, queries {int} NOT NULL);
CREATE TABLE IF NOT EXISTS b4b_buckets (
    account TEXT NOT NULL, bucket {int} NOT NULL, PRIMARY KEY (account, bucket)
){without_rowid};
CREATE TABLE IF NOT EXISTS b4b_seen (
    account TEXT NOT NULL, digest TEXT NOT NULL, sigma {real} NOT NULL, PRIMARY KEY (account, digest)
){without_rowid}
"""
UPSERT_META = "INSERT INTO b4b_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
CURVES = ("exp", "linear", "ramp", "none")
TRANSFORMS = ("affine", "rotation", "shuffle", "none",
              "b4b-affine", "b4b-shuffle-pad", "b4b-affine-shuffle-pad", "b4b-binary", "b4b-sybil-map")
STEALKIT = {"num_tables": 1, "num_planes": 12, "coverage_unit": "fraction", "curve": "exp", "alpha": 1.0, "beta": 0.5,
            "lam": 0.01, "relative": True, "noise_per": "query", "transform": "affine"}
B4B_RELEASED = {"num_tables": 20, "num_planes": 12, "coverage_unit": "percent", "curve": "exp", "alpha": 0.8, "beta": 80.0,
                "lam": 1e-6, "relative": False, "noise_per": "batch", "transform": "b4b-sybil-map"}
PRESETS = {"stealkit": STEALKIT, "b4b-released": B4B_RELEASED}


def noise_curve(coverage: np.ndarray | float, curve: str = "exp", alpha: float = 1.0, beta: float = 0.5, lam: float = 0.01,
                onset: float = 0.0):
    """σ as a function of the coverage c (in the curve's unit: a fraction, or percent for B4B; or the coverage
    rate, see `rate_reference`). Vectorised."""
    c = np.asarray(coverage, dtype=np.float64)
    if curve == "exp":
        return np.maximum(lam * (np.power(alpha / lam, c / beta) - 1.0), 0.0)
    if curve == "linear":
        return alpha * c / beta
    if curve == "ramp":
        return alpha * np.clip((c - onset) / (beta - onset), 0.0, 1.0)
    if curve == "none":
        return np.zeros_like(c)
    raise ValueError(f"unknown noise curve {curve!r}; choose from {CURVES}")


def coverage_fraction(per_table: np.ndarray, num_planes: int) -> np.ndarray:
    """Hit buckets per table (… × num_tables) -> coverage: the fraction of a table's 2^num_planes buckets
    hit, averaged over the tables (B4B's coverage, as a fraction)."""
    return np.asarray(per_table).mean(-1) / 2**num_planes


def _hits_per_table(tx, num_planes: int, num_tables: int, account: str | None = None) -> dict[str, np.ndarray]:
    """Inside a read: {account: hit buckets per table (int64 num_tables)} from the stored ids t·2^num_planes + b,
    of one account or of all."""
    size = 2 ** int(num_planes)
    where = " WHERE account = ?" if account is not None else ""
    rows = tx.execute(f"SELECT account, bucket / {size}, COUNT(*) FROM b4b_buckets{where} GROUP BY 1, 2",
                      (account,) if account is not None else ()).fetchall()
    out: dict[str, np.ndarray] = {}
    for acc, table, n in rows:
        if int(table) < num_tables:
            out.setdefault(acc, np.zeros(num_tables, dtype=np.int64))[int(table)] = int(n)
    return out


def _account_stats(queries: int, per_table: np.ndarray, num_planes: int) -> dict:
    return {"queries": int(queries), "buckets": int(per_table.sum()), "coverage": float(coverage_fraction(per_table, num_planes))}


def read_coverage(db: Database) -> dict[str, dict] | None:
    """Every account's coverage state in `db` (a Database holding the b4b_ tables), read with the stored
    hashing parameters: {account: {"queries", "buckets" (hit, all tables), "coverage" (a fraction, averaged
    over the tables), and "rate" when the defence measures the coverage rate}}, sorted by account; {} when the
    defence has answered nobody yet; None when `db` holds no coverage state."""
    with db.read() as tx:
        if not db.columns(tx, "b4b_accounts") or not db.columns(tx, "b4b_meta"):
            return None
        meta = dict(tx.execute("SELECT key, value FROM b4b_meta").fetchall())
        queries = dict(tx.execute("SELECT account, queries FROM b4b_accounts").fetchall())
        if "params" not in meta:  # set up, never called: nothing hashed yet
            return {}
        params = json.loads(meta["params"])
        planes, tables = int(params["num_planes"]), int(params.get("num_tables", 1))
        hits = _hits_per_table(tx, planes, tables)
        rated = "rate_reference" in meta  # a sticky defence counts distinct images for the rate
        seen = dict(tx.execute("SELECT account, COUNT(*) FROM b4b_seen GROUP BY account").fetchall()) if rated and db.columns(tx, "b4b_seen") else {}
    zero = np.zeros(tables, dtype=np.int64)
    out = {a: _account_stats(queries.get(a, 0), hits.get(a, zero), planes) for a in sorted(set(queries) | set(hits))}
    if rated:
        ref = json.loads(meta["rate_reference"])
        for a, s in out.items():
            n = seen.get(a, s["queries"])
            s["rate"] = float(s["coverage"] / reference_coverage(ref, n, planes)) if n else 0.0
    return out


class CoverageConfig(DefenceConfig):
    """Defaults: the "stealkit" preset; `preset: b4b-released` fills every setting not given with B4B's."""

    preset: Literal["stealkit", "b4b-released"] = "stealkit"
    num_tables: int = Field(1, ge=1, le=64)  # LSH tables; coverage is averaged over them (B4B: 20)
    num_planes: int = Field(12, ge=1, le=40)  # 2^num_planes buckets per table
    db_path: str = ":memory:"  # where per-account state lives (a SQLite path, ":memory:", or a database URL)
    coverage_unit: Literal["fraction", "percent"] = "fraction"  # what the curve's c (and β) are in
    curve: Literal["exp", "linear", "ramp", "none"] = "exp"
    alpha: float = Field(1.0, ge=0)
    beta: float = Field(0.5, gt=0)
    lam: float = Field(0.01, ge=0)
    onset: float = Field(0.0, ge=0)  # "ramp": where σ starts to rise (it reaches alpha at beta)
    rate_reference: str | None = None  # a coverage-rate calibration JSON (see the module doc); None: raw coverage
    relative: bool = True  # σ in units of the answer's RMS entry (else absolute)
    noise_per: Literal["query", "batch"] = "query"  # one σ per answer, or one per call (B4B)
    noise_seed: Literal["stream", "input", "bucket"] = "stream"  # fresh per call (B4B); fixed per (account, input | LSH cell)
    sticky: bool = False  # with noise_seed "input": an image asked again gets its first answer; only new images count
    transform: Literal["affine", "rotation", "shuffle", "none", "b4b-affine", "b4b-shuffle-pad", "b4b-affine-shuffle-pad",
                       "b4b-binary", "b4b-sybil-map"] = "affine"
    bias_scale: float = Field(1.0, ge=0)  # "affine": b ~ N(0, bias_scale²)
    pad_dim: int | None = Field(None, ge=1)  # "b4b-*shuffle-pad": padded coordinates (None: D, as released)
    binary_relative_dim: float = Field(2.0, gt=0)  # "b4b-binary": output width / D (released: 2)
    secret: str = "stealkit-b4b"
    seed: int = 0
    presets: ClassVar[dict[str, dict]] = PRESETS

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data):
        if not isinstance(data, dict):
            return data
        return {**cls.presets.get(data.get("preset", "stealkit"), {}), **data}

    @model_validator(mode="after")
    def _curve(self):
        if self.curve == "exp" and not (self.alpha > self.lam > 0):
            raise ValueError(f"the exp curve needs alpha > lam > 0, got alpha={self.alpha}, lam={self.lam}")
        if self.sticky and (self.noise_seed != "input" or self.noise_per != "query"):
            raise ValueError("sticky answers need noise_seed: input and noise_per: query (the answer is kept per image)")
        if self.curve == "ramp" and not self.beta > self.onset:
            raise ValueError(f"the ramp curve needs beta > onset, got beta={self.beta}, onset={self.onset}")
        return self


@register_defence("coverage")
class CoverageDefence(Defence):
    Config = CoverageConfig

    def __init__(self, *, db_path: str = ":memory:", **settings):
        super().__init__(db_path=str(db_path), **settings)

    def identity(self) -> dict:
        """The settings without where the state is stored nor the secret (which must not leave the server)."""
        out = super().identity()
        out.pop("db_path", None)
        out["secret"] = hashlib.sha256(self.config.secret.encode()).hexdigest()[:16]
        if self.rate_ref is not None:
            out["rate_reference"] = self.rate_ref["sha256"]  # what it holds, not where it lies
        return out

    def setup(self) -> None:
        c = self.config
        self.preset, self.num_tables, self.num_planes, self.curve = c.preset, int(c.num_tables), int(c.num_planes), c.curve
        self.alpha, self.beta, self.lam, self.relative = float(c.alpha), float(c.beta), float(c.lam), bool(c.relative)
        self.coverage_scale = 100.0 if c.coverage_unit == "percent" else 1.0
        self.noise_per, self.noise_seed, self.transform_kind, self.bias_scale = c.noise_per, c.noise_seed, c.transform, float(c.bias_scale)
        self.secret, self.seed = str(c.secret), int(c.seed)
        self.onset = float(c.onset)
        self.rate_ref = load_reference(c.rate_reference, self.num_tables, self.num_planes, self.seed) if c.rate_reference else None
        self.db_path = str(c.db_path)
        self._db = Database.open(self.db_path)
        self._db.create(SCHEMA)
        self.feature_dim: int | None = None
        self.planes: torch.Tensor | None = None  # num_tables × D × num_planes
        self.center: torch.Tensor | None = None
        self._transforms: dict[str, object] = {}
        self._load_meta()

    # ------------------------------------------------------------------ state
    def _params(self) -> dict:
        p = {"num_planes": self.num_planes, "seed": self.seed, "feature_dim": self.feature_dim}
        if self.num_tables != 1:  # stored only when not 1, so the state of earlier one-table versions reopens
            p["num_tables"] = self.num_tables
        return p

    def _load_meta(self) -> None:
        with self._db.read() as tx:
            rows = dict(tx.execute("SELECT key, value FROM b4b_meta").fetchall())
        if "params" in rows:
            stored = json.loads(rows["params"])
            tables = stored.get("num_tables", 1)
            if stored["num_planes"] != self.num_planes or stored["seed"] != self.seed or tables != self.num_tables:
                raise ValueError(
                    f"{self.db_path} holds coverage state for num_tables={tables}, num_planes={stored['num_planes']}, "
                    f"seed={stored['seed']}; this defence has num_tables={self.num_tables}, num_planes={self.num_planes}, "
                    f"seed={self.seed} (use another db_path or the same settings)"
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
            # one draw for all tables: table 0 is the one table of a one-table defence (same seed, same planes)
            self.planes = torch.randn(self.num_tables, self.feature_dim, self.num_planes, generator=g)
            with self._db.transaction() as tx:
                tx.execute(UPSERT_META, ("params", json.dumps(self._params())))
                if self.rate_ref is not None:  # so that the operator's view (read_coverage) can read rates too
                    tx.execute(UPSERT_META, ("rate_reference", json.dumps({k: self.rate_ref[k] for k in ("queries", "coverage")})))

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
            tx.execute("DELETE FROM b4b_seen WHERE account = ?", (account,))

    # ------------------------------------------------------------------ parts
    @property
    def num_buckets(self) -> int:
        """Buckets per table."""
        return 2**self.num_planes

    def buckets(self, features: torch.Tensor) -> np.ndarray:
        """LSH bucket ids (int64 N × num_tables, each in [0, 2^num_planes)) of float N×D features:
        bit k of table t is [(f − c)·h_tk > 0], bucket = Σ_k bit_k·2^k."""
        self._set_dim(features.shape[1])
        f = features.detach().float().cpu()
        if self.center is not None:
            f = f - self.center
        bits = (torch.einsum("nd,tdp->ntp", f, self.planes) > 0).long()
        return (bits << torch.arange(self.num_planes)).sum(2).numpy()

    def _per_table(self, ids) -> np.ndarray:
        """Stored bucket ids (t·2^num_planes + b) -> hit buckets per table (int64 num_tables)."""
        tables = np.asarray(list(ids), dtype=np.int64) >> self.num_planes
        return np.bincount(tables, minlength=self.num_tables)[: self.num_tables]

    def _coverage(self, per_table: np.ndarray) -> np.ndarray:
        """Hit buckets per table (… × num_tables) -> coverage, a fraction averaged over the tables."""
        return coverage_fraction(per_table, self.num_planes)

    def stats(self, account: str) -> dict:
        """{"queries", "buckets" (hit, all tables), "coverage" (a fraction, averaged over tables), "sigma"} so far."""
        with self._db.read() as tx:
            row = tx.execute("SELECT queries FROM b4b_accounts WHERE account = ?", (account,)).fetchone()
            per_table = _hits_per_table(tx, self.num_planes, self.num_tables, account).get(account, np.zeros(self.num_tables, dtype=np.int64))
            distinct = int(tx.execute("SELECT COUNT(*) FROM b4b_seen WHERE account = ?", (account,)).fetchone()[0])
        out = _account_stats(row[0] if row else 0, per_table, self.num_planes)
        n = distinct if self.config.sticky else out["queries"]  # sticky: repeats are not counted for the rate
        extra = {"rate": float(self.rate(out["coverage"], n))} if self.rate_ref is not None else {}
        return {**out, **extra, "sigma": float(self.sigma(out["coverage"], n))}

    def coverage(self, account: str) -> float:
        return self.stats(account)["coverage"]

    def rate(self, coverage, queries):
        """Coverage (a fraction) after `queries` queries / the reference sweep's coverage after as many. Vectorised."""
        return np.asarray(coverage, dtype=np.float64) / reference_coverage(self.rate_ref, queries, self.num_planes)

    def sigma(self, coverage, queries=None):
        """σ for a coverage given as a fraction (scaled to the curve's unit here), or, with a rate reference, for
        the coverage rate after `queries` queries. Vectorised."""
        if self.rate_ref is not None:
            if queries is None:
                raise ValueError("a coverage-rate defence needs the number of queries behind each coverage")
            x = self.rate(coverage, queries)
        else:
            x = np.asarray(coverage, dtype=np.float64) * self.coverage_scale
        return noise_curve(x, self.curve, self.alpha, self.beta, self.lam, self.onset)

    def _account_transform(self, account: str, dim: int):
        """The account's map (a function N×D -> N×D'), or None; drawn once from sha256(secret, account)."""
        if account in self._transforms:
            return self._transforms[account]
        g = torch.Generator().manual_seed(derived_seed("transform", self.secret, account))
        kind, fn = self.transform_kind, None
        if kind in ("affine", "rotation", "shuffle"):
            if kind == "shuffle":
                perm = torch.randperm(dim, generator=g)
                signs = torch.randint(0, 2, (dim,), generator=g).float() * 2 - 1
                m, scale, bias = torch.eye(dim)[perm] * signs, 1.0, torch.zeros(dim)
            else:
                q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
                m = (q * torch.sign(torch.diagonal(r))).float()
                if kind == "affine":
                    scale = math.exp(float(torch.empty(()).uniform_(math.log(0.5), math.log(2.0), generator=g)))
                    bias = torch.randn(dim, generator=g) * self.bias_scale
                else:
                    scale, bias = 1.0, torch.zeros(dim)
            fn = lambda x: scale * (x @ m.to(x.device)) + bias.to(x.device)  # noqa: E731
        elif kind == "b4b-sybil-map":
            a = torch.rand(dim, dim, generator=g) * 2 - 1
            b = torch.rand(dim, generator=g) * 2 - 1
            fn = lambda x: x @ a.to(x.device) + b.to(x.device)  # noqa: E731
        elif kind.startswith("b4b-") and kind != "b4b-binary":
            steps = []
            if "affine" in kind:
                a = torch.rand(dim, generator=g) * 2 - 1
                b = torch.rand(dim, generator=g) * 2 - 1
                steps.append(lambda x: x * a.to(x.device) + b.to(x.device))
            if "shuffle-pad" in kind:
                pad = int(self.config.pad_dim or dim)
                perm = torch.randperm(dim + pad, generator=g)
                extra = torch.randn(pad, generator=g)
                steps.append(lambda x: torch.cat([x, extra.to(x.device).expand(len(x), pad)], 1)[:, perm.to(x.device)])

            def fn(x):
                for step in steps:
                    x = step(x)
                return x
        elif kind == "b4b-binary":
            n = int(dim * self.config.binary_relative_dim)
            theta = 2 * math.pi * torch.rand(dim - 1, n, generator=g, dtype=torch.float64)
            slopes = torch.cat([-torch.tan(theta), torch.ones(1, n, dtype=torch.float64)])  # D × n hyperplane normals
            points = torch.randint(0, 1000, (n, dim), generator=g).double() / 999  # a point of np.linspace(0, 1, 1000)^D per plane
            intercepts = (slopes * points.T).sum(0).float()
            slopes = slopes.float()
            fn = lambda x: (x @ slopes.to(x.device) > intercepts.to(x.device)).float()  # noqa: E731
        self._transforms[account] = fn
        return fn

    def transform(self, features: torch.Tensor, account: str) -> torch.Tensor:
        """The account's fixed map N×D -> N×D (N×D' for the pad and binary transforms), no noise."""
        fn = self._account_transform(account, features.shape[1])
        return features.float() if fn is None else fn(features.float())

    # ------------------------------------------------------------------ defence
    def __call__(self, features: torch.Tensor, *, images: torch.Tensor | None = None, account: str = "anonymous") -> torch.Tensor:
        if features.ndim != 2:
            raise ValueError(f"expected features N×D, got {tuple(features.shape)}")
        n = len(features)
        if n == 0:
            return features.float()
        ids = self.buckets(features) + (np.arange(self.num_tables, dtype=np.int64) << self.num_planes)  # N × tables, global ids
        with self._db.transaction() as tx:
            # the account's row first: on PostgreSQL the UPDATE locks it, so concurrent calls for one account queue here
            tx.execute("INSERT INTO b4b_accounts (account, queries) VALUES (?, 0) ON CONFLICT (account) DO NOTHING", (account,))
            before = int(tx.execute("UPDATE b4b_accounts SET queries = queries + ? WHERE account = ? RETURNING queries", (n, account)).fetchall()[0][0]) - n
            hit = {int(b) for (b,) in tx.execute("SELECT bucket FROM b4b_buckets WHERE account = ?", (account,)).fetchall()}
            per_table = self._per_table(hit)
            counts = np.empty((n, self.num_tables), dtype=np.int64)
            new = []
            for i, row in enumerate(ids.tolist()):
                for t, b in enumerate(row):
                    if b not in hit:
                        hit.add(b)
                        new.append((account, b))
                        per_table[t] += 1
                counts[i] = per_table
            tx.executemany("INSERT INTO b4b_buckets (account, bucket) VALUES (?, ?) ON CONFLICT DO NOTHING", new)
            cov = self._coverage(counts)  # after each query
            done = before + np.arange(1, n + 1)  # the account's queries after each one
            if self.config.sticky:
                sig = self._sticky_sigma(tx, account, self._digests(features, images), cov)
            else:
                if self.noise_per == "batch":
                    cov, done = np.full(n, cov[-1]), np.full(n, done[-1])  # one σ for the call, from the state after all of it
                sig = self.sigma(cov, done)
        sig = torch.from_numpy(np.asarray(sig, dtype=np.float64)).float()[:, None]
        f = features.detach().float().cpu()
        if self.relative:
            sig = sig * f.norm(dim=1, keepdim=True) / math.sqrt(f.shape[1])
        noised = f + sig * self._noise(f, images, account, before, ids)
        return self.transform(noised, account).to(features.device)

    @staticmethod
    def _digests(features: torch.Tensor, images: torch.Tensor | None) -> list[str]:
        """SHA-256 per row of the image's bytes (of the exact feature's when no image is given)."""
        rows = images.detach().cpu().contiguous() if images is not None and len(images) == len(features) else features.detach().float().cpu()
        return [hashlib.sha256(rows[i].numpy().tobytes()).hexdigest() for i in range(len(rows))]

    def _sticky_sigma(self, tx, account: str, digests: list[str], cov: np.ndarray) -> np.ndarray:
        """Inside the call's transaction: σ per row when answers are sticky. An image this account asked before
        gets the σ it got then (so, with input-seeded noise, the very same answer); a new image gets σ from the
        coverage after it and, for the rate, the number of *distinct* images asked so far: repeats neither clean
        an answer nor dilute the rate. New images' σ are stored (b4b_seen)."""
        known: dict[str, float] = {}
        uniq = list(dict.fromkeys(digests))
        for i in range(0, len(uniq), 500):
            part = uniq[i : i + 500]
            q = f"SELECT digest, sigma FROM b4b_seen WHERE account = ? AND digest IN ({','.join('?' * len(part))})"
            known.update({d: float(v) for d, v in tx.execute(q, (account, *part)).fetchall()})
        distinct = int(tx.execute("SELECT COUNT(*) FROM b4b_seen WHERE account = ?", (account,)).fetchone()[0])
        sig, fresh = np.empty(len(digests)), []
        for i, d in enumerate(digests):
            if d not in known:
                distinct += 1
                known[d] = float(self.sigma(cov[i], distinct))
                fresh.append((account, d, known[d]))
            sig[i] = known[d]
        tx.executemany("INSERT INTO b4b_seen (account, digest, sigma) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", fresh)
        return sig

    def _noise(self, f: torch.Tensor, images: torch.Tensor | None, account: str, before: int, ids: np.ndarray) -> torch.Tensor:
        """Standard normal N×D: one draw per call seeded by the account's position in its stream ("stream"), or
        one per row seeded by (secret, account, the row's input): "input" the image's bytes (else the exact
        feature's), "bucket" the row's LSH cell (its bucket in every table, N × tables `ids`), so that near-duplicates
        of an image (a pixel changed to get a fresh draw) share its noise too. Either way an account asking the
        same image again gets the same noise, and averaging repeats removes none of it."""
        if self.noise_seed == "stream":
            g = torch.Generator().manual_seed(derived_seed("noise", self.secret, self.seed, account, before))
            return torch.randn(f.shape, generator=g)
        if self.noise_seed == "bucket":
            rows = torch.from_numpy(np.ascontiguousarray(ids))
            digests = [hashlib.sha256(rows[i].numpy().tobytes()).hexdigest() for i in range(len(rows))]
        else:
            digests = self._digests(f, images)
        out = torch.empty_like(f)
        for i, digest in enumerate(digests):
            out[i] = torch.randn(f.shape[1], generator=torch.Generator().manual_seed(derived_seed("noise-input", self.secret, self.seed, account, digest)))
        return out

    def close(self) -> None:
        self._db.close()

    def __repr__(self) -> str:
        return (
            f"CoverageDefence(preset={self.preset!r}, num_tables={self.num_tables}, num_planes={self.num_planes}, "
            f"curve={self.curve!r}, alpha={self.alpha}, beta={self.beta}, lam={self.lam}, noise_per={self.noise_per!r}, "
            f"transform={self.transform_kind!r}, db_path={self.db_path!r})"
        )
