"""Which defence protects this encoder? One protocol for every defence, through `stealkit serve`.

For every setting of the config (a defence and its strength, or none) this script
1. serves the victim with that defence and normalised answers (`stealkit serve --normalize --defence ...`,
   one ledger per setting, per-account defence state in it);
2. lets an honest user query its own task's images (GTSRB train subset, then the full test split) through its
   own account, and thieves query `tiny_imagenet32` through theirs: StolenEncoder (Liu et al., CCS 2022,
   arXiv:2201.05889) at every budget, and the adaptive thieves the setting names:
   - "sybil": the largest budget spread over several accounts, answers mapped into account 0's space on
     `overlap` images asked through every account (B4B's adaptive attacker, Dubiński et al., NeurIPS 2023,
     arXiv:2310.08571, Section 5);
   - "averaging": every image asked `repeats` times through one account, answers averaged;
   - "renormalise": the largest budget's paid answers, L2-normalised before training (against poisoning);
   - "recentre": the same answers minus their mean, L2-normalised (against B4B's y = xA + B maps);
   - "diluting": the largest budget's images, each chunk followed by re-asks of earlier ones, so that the
     account's coverage rate stays low (against the coverage-rate defence); each image keeps its last answer;
3. stops the server, trains every thief's stolen encoder (queries cached, training resumable), and reads
   each account's billed queries and coverage from the ledger;
4. probes on GTSRB: TA clean (the victim's own features), TA-honest (the honest account's answers), SA of
   every thief (its stolen encoder on clean images); the same MLP probe for all.
It also measures the no-query pre-training-encoder baseline (SimCLR on the thief's largest surrogate set,
Table X's setting), the probe's seed spread on the undefended honest answers, and writes one JSON with the
trade-off (Pareto frontier on worst-case SA), the cost framing (queries and dollars to reach the undefended SA
at the smallest budget) and the goal row. Resumable: rerun the same command; finished work is read back.

    python benchmarks/defence_tradeoff.py configs/tradeoff/defence_tradeoff_real_cpu.yaml \
        --out benchmarks/results/defence_tradeoff_real_cpu.json [--only LABEL ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

HERE = Path(__file__).resolve().parent
ADAPTIVE = ("sybil", "averaging", "renormalise", "recentre", "diluting")  # and "diluting-N": N re-asks per new image
# ROLE+fc: ROLE's paid answers again, the stolen encoder with a Linear layer on its pooled features (no new query)
OFFLINE = ("renormalise", "recentre")  # thieves that only transform the largest plain thief's paid answers


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Setting(Strict):
    label: str
    family: str = "none"  # the curve it belongs to in the plot
    defence: dict | None = None  # a defence spec as `stealkit serve --defence NAME --defence-arg K=V` takes it
    adaptive: list[str] = []  # ADAPTIVE's names, "diluting-N", and any of them (or "thief") with "+fc"
    budgets: list[int] | None = None  # the plain thieves' budgets here (None: the config's largest only); may go beyond the config's, to price a defence
    paper: str | None = None  # the paper's TA / SA beside it, when the setting is a paper's

    @field_validator("adaptive")
    @classmethod
    def _known(cls, roles: list[str]) -> list[str]:
        bad = [r for r in roles if r.removesuffix("+fc") not in ADAPTIVE + ("thief",)
               and not re.fullmatch(r"diluting-\d+(\.\d+)?", r.removesuffix("+fc"))]
        if bad:
            raise ValueError(f"unknown adaptive thief {bad[0]!r}: choose from {', '.join(ADAPTIVE)} or diluting-N "
                             f"(N near-duplicates re-asked per new image)")
        return roles


class TradeoffConfig(Strict):
    name: str
    description: str = ""
    seed: int = 0
    victim: dict  # {label, checkpoint}
    port: int = 8771
    price_per_1000: float = Field(1.2, ge=0)
    honest: dict  # {name, train_limit, test_limit (None: the whole test split)}: the honest user's task
    sa_test_limit: int | None = Field(None, ge=1)  # SA's test images (a seeded subset of the same test split; None: all)
    surrogate: dict  # {name, split}: the thieves' images
    budgets: list[int]
    attacker: dict  # StolenEncoder's settings (the thieves and the sybil's trainer)
    sybil: dict = {"accounts": 4, "overlap": 600, "align": "affine"}
    averaging: dict = {"repeats": 4}
    diluting: dict = {"repeats_per_new": 1.0}  # diluted_queries' settings: re-asks per new image, chunk, nudge
    baseline: dict  # the pretrain-encoder attack's config
    probe: dict = {"kind": "mlp", "config": {"epochs": 500}}
    probe_seeds: int = Field(3, ge=1)  # probes of the undefended honest answers, for the seed spread
    goal: dict = {"max_ta_loss": 1.0, "max_sa_gain": 10.0}
    settings: list[Setting]


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()[:60]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- serving ----------------------------------------------------------------------------------------------

def defence_args(spec: dict | None) -> list[str]:
    if not spec:
        return []
    spec = dict(spec)
    out = ["--defence", spec.pop("name")]
    for k, v in spec.items():
        out += ["--defence-arg", f"{k}={v}"]
    return out


@contextlib.contextmanager
def served(cfg: TradeoffConfig, spec: dict | None, ledger: Path):
    url = f"http://127.0.0.1:{cfg.port}"
    cmd = ["stealkit", "serve", "--checkpoint", cfg.victim["checkpoint"], "--ledger", str(ledger), "--port", str(cfg.port),
           "--normalize", "--device", "cpu", "--log-level", "warning", "--price-per-1000", str(cfg.price_per_1000),
           *defence_args(spec)]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}  # the server and the client take turns on the cores
    proc = subprocess.Popen(cmd, env=env)
    try:
        subprocess.run([sys.executable, str(HERE / "wait_ready.py"), url, "--timeout", "300"], check=True)
        yield url
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        if proc.poll() is None:
            proc.kill()


def account_keys(ledger: Path, names: list[str], store: Path) -> dict[str, str]:
    """API keys of `names` in `ledger`, created once and kept in `store` (a resumed run reuses them)."""
    keys = json.loads(store.read_text()) if store.exists() else {}
    for name in names:
        if name not in keys:
            out = subprocess.run(["stealkit", "keys", "create", name, "--ledger", str(ledger)], capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"could not create account {name!r} in {ledger}: {out.stderr.strip().splitlines()[-1:]}. If a "
                                 f"run was stopped while creating accounts, its key was never kept: delete {ledger.parent} and rerun")
            keys[name] = out.stdout.strip().splitlines()[-1]
            store.write_text(json.dumps(keys))
    return keys


def ledger_accounts(ledger: Path) -> dict[str, dict]:
    """{account: {"billed", "coverage" (fraction or None)}} from `stealkit accounts --ledger L --json`."""
    out = subprocess.run(["stealkit", "accounts", "--ledger", str(ledger), "--json", "--threshold", "1.0"],
                         check=True, capture_output=True, text=True)
    data = json.loads(out.stdout)
    rows = data.get("accounts", data) if isinstance(data, dict) else data
    return {r["account"]: {k: v for k, v in r.items() if k != "account"} for r in rows}


# ---- the parties ------------------------------------------------------------------------------------------

def images_of(spec: dict, n: int | None, seed: int):
    from stealkit.data import load_dataset

    ds = load_dataset(spec["name"], spec.get("split", "train"), root=spec.get("root"))
    return ds.sample(n, seed=seed) if n and n < len(ds) else ds


def budgets_of(cfg: TradeoffConfig, setting: Setting) -> list[int]:
    return sorted(setting.budgets or [max(cfg.budgets)])


def roles(cfg: TradeoffConfig, setting: Setting) -> list[str]:
    out = [f"thief-{b}" for b in budgets_of(cfg, setting)]
    out += [a for a in setting.adaptive if a not in OFFLINE and not a.endswith("+fc")]
    return out


def query_phase(cfg: TradeoffConfig, setting: Setting, sdir: Path, honest_sets, surrogates) -> None:
    """Everything that needs the server: the honest user's answers, every thief's paid answers (cached)."""
    from safetensors.torch import save_file

    from stealkit.attacks.base import attack_class
    from stealkit.attacks.queries import query_target
    from stealkit.targets.adaptive import AveragingTarget, diluted_queries
    from stealkit.targets.remote import RemoteTarget

    todo_honest = not (sdir / "honest.pt").exists()
    todo = [r for r in roles(cfg, setting) if not (sdir / r / "answers.done").exists()]
    if not todo_honest and not todo:
        return
    ledger = sdir / "ledger.sqlite"
    names = ["honest"] + [f"thief-{b}" for b in budgets_of(cfg, setting)] + [f"sybil-{j}" for j in range(cfg.sybil["accounts"])]
    names += ["averager", "diluter"] + [diluter_account(r) for r in setting.adaptive if r.startswith("diluting-")]
    keys = account_keys(ledger, names, sdir / "keys.json")
    big = max(cfg.budgets)

    def remote(account: str, cache: str):
        return RemoteTarget(url, keys[account], cache_dir=sdir / "cache" / cache, cache_namespace=cache)

    with served(cfg, setting.defence, ledger) as url:
        if todo_honest:
            t0 = time.perf_counter()
            honest = remote("honest", "honest")
            train, test = honest_sets
            tr, te = query_target(honest, train.images), query_target(honest, test.images)  # batches of 256
            torch.save({"train": tr, "test": te, "seconds": time.perf_counter() - t0}, sdir / "honest.pt")
            log(f"{setting.label}: honest user's {len(train) + len(test)} answers in {time.perf_counter() - t0:.0f} s")
        for role in todo:
            work = sdir / role
            work.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            if role.startswith("thief-"):
                b = int(role.split("-")[1])
                attack = attack_class("stolenencoder")(dict(cfg.attacker))
                attack.answers(remote(role, role), surrogates[b], work, False)
            elif role == "sybil":
                attack = attack_class("sybil")(sybil_config(cfg))
                targets = [remote(f"sybil-{j}", f"sybil-{j}") for j in range(cfg.sybil["accounts"])]
                attack.answers(targets, surrogates[big], work, False)
            elif role == "averaging":
                attack = attack_class("stolenencoder")(dict(cfg.attacker))
                reps = [remote("averager", f"averager-r{r}") for r in range(cfg.averaging["repeats"])]
                attack.answers(AveragingTarget(reps), surrogates[big], work, False)
                # how much the repeats differ: 0 means every repeat got the very same answer (nothing to average)
                each = [r.embed(surrogates[big].images) for r in reps]  # from their caches: no new query
                spread = max(float((e - each[0]).abs().max()) for e in each)
                (work / "repeats.json").write_text(json.dumps({"max_abs_difference_between_repeats": spread,
                                                               "repeats": len(reps), "cached_reads": sum(r.cache_hits for r in reps)}))
            elif role.startswith("diluting"):  # repeats must reach the server: no answer cache (a crash here pays again)
                target = RemoteTarget(url, keys[diluter_account(role)])
                imgs = surrogates[big].images.contiguous()
                feats, billed = diluted_queries(target, imgs, **diluting_config(cfg, role))
                tmp = work / "queries.safetensors.tmp"  # the attack's query cache: it trains on these answers
                save_file({"images": imgs, "features": feats.contiguous(), "billed": torch.tensor([billed])}, str(tmp))
                os.replace(tmp, work / "queries.safetensors")
            (work / "answers.done").write_text(str(time.perf_counter() - t0))
            log(f"{setting.label}: {role}'s answers in {time.perf_counter() - t0:.0f} s")
    (sdir / "accounts.json").write_text(json.dumps(ledger_accounts(ledger), indent=2))


def diluter_account(role: str) -> str:
    """"diluting" -> "diluter" (the config's diluter), "diluting-3" -> "diluter-3"."""
    return "diluter" + role[len("diluting"):]


def diluting_config(cfg: TradeoffConfig, role: str) -> dict:
    """diluted_queries' settings of a diluting role: the config's, with "diluting-N"'s N re-asks per new image."""
    out = dict(cfg.diluting)
    if role != "diluting":
        out["repeats_per_new"] = float(role.split("-", 1)[1])
    return out


def sybil_config(cfg: TradeoffConfig) -> dict:
    """The sybil trains exactly as the plain thief (StolenEncoder's loss and optimiser), over several accounts."""
    a = dict(cfg.attacker)
    base = {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4, "loss": "stolenencoder", "lam": 20.0}
    base.update({k: v for k, v in a.items() if k in ("arch", "epochs", "batch_size", "lr", "momentum", "weight_decay", "augment", "seed")})
    base.update({k: v for k, v in cfg.sybil.items()})
    return base


def train_phase(cfg: TradeoffConfig, setting: Setting, sdir: Path, surrogates) -> dict:
    """Each thief's stolen encoder (from its cached answers; the API is not needed) -> {role: Encoder}."""
    from safetensors.torch import load_file, save_file

    from stealkit.attacks.base import attack_class
    from stealkit.models.checkpoint import checkpoint_exists, load_encoder, save_encoder
    from stealkit.targets.adaptive import OfflineTarget, recentred

    big = max(cfg.budgets)
    out = {}
    wanted = roles(cfg, setting) + [a for a in setting.adaptive if a in OFFLINE or a.endswith("+fc")]
    for role in wanted:
        work = sdir / role
        if role.endswith("+fc") and not (work / "queries.safetensors").exists():
            base = role.removesuffix("+fc")  # "thief": the largest plain thief
            work.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sdir / (f"thief-{big}" if base == "thief" else base) / "queries.safetensors", work / "queries.safetensors")
        if role in OFFLINE and not (work / "queries.safetensors").exists():
            work.mkdir(parents=True, exist_ok=True)  # the largest plain thief's paid answers, transformed
            blob = load_file(str(sdir / f"thief-{big}" / "queries.safetensors"))
            how = (lambda f: F.normalize(f.float(), dim=1)) if role == "renormalise" else recentred
            blob["features"] = how(blob["features"]).contiguous()
            save_file(blob, str(work / "queries.safetensors"))
        if checkpoint_exists(work / "stolen"):
            out[role] = load_encoder(work / "stolen")
            continue
        if role == "averaging" and json.loads((work / "repeats.json").read_text())["max_abs_difference_between_repeats"] == 0.0:
            log(f"{setting.label}: every repeat got the same answer: the averaging thief trains on what one ask gives "
                f"(not trained again; its SA is the plain thief's in distribution)")
            continue
        t0 = time.perf_counter()
        if role == "sybil":
            attack, surrogate = attack_class("sybil")(sybil_config(cfg)), surrogates[big]
            target = [OfflineTarget(512) for _ in range(cfg.sybil["accounts"])]
        else:
            b = int(role.split("-")[1]) if role.startswith("thief-") else big
            conf = dict(cfg.attacker, **({"fc": True} if role.endswith("+fc") else {}))
            attack, surrogate, target = attack_class("stolenencoder")(conf), surrogates[b], OfflineTarget(512)
        result = attack.steal(target, surrogate, device="cpu", workdir=work, progress=False)
        save_encoder(result.encoder, work / "stolen", role=role, setting=setting.label, queries=result.queries)
        (work / "train.json").write_text(json.dumps({"seconds": time.perf_counter() - t0, "queries": result.queries}))
        log(f"{setting.label}: {role} trained in {time.perf_counter() - t0:.0f} s")
        out[role] = result.encoder
    return out


def probe(cfg: TradeoffConfig, sets, train_feats: list, test_feats: list, seeds: list[int]) -> list[float]:
    from stealkit.probes.evaluate import evaluate_feature_sets

    train, test = sets
    ncls = max(train.num_classes, int(train.labels.max()) + 1)
    kw = dict(cfg.probe.get("config", {}))
    if cfg.probe["kind"] != "knn":
        kw["seeds"] = seeds
    res = evaluate_feature_sets(train_feats, train.labels, test_feats, test.labels, cfg.probe["kind"], ncls, device="cpu", **kw)
    return [100.0 * r["accuracy"] for r in res]


def clean_features(encoder, honest_sets):
    from stealkit.probes.features import extract_features

    train, test = honest_sets
    return extract_features(encoder, train.images, device="cpu"), extract_features(encoder, test.images, device="cpu")


def evaluate_setting(cfg, setting, sdir: Path, honest_sets, sa_sets, victim_clean, stolen: dict) -> dict:
    """Probe the honest answers and every stolen encoder; a rerun that added thieves probes only the new ones."""
    done = sdir / "result.json"
    out = json.loads(done.read_text()) if done.exists() else None
    todo = {role: enc for role, enc in stolen.items() if out is None or role not in out["SA"]}
    if out is not None and not todo:
        return out
    names, trs, tes = [], [], []
    for role, enc in todo.items():
        tr, te = clean_features(enc, sa_sets)
        names.append(role)
        trs.append(tr)
        tes.append(te)
    accs = probe(cfg, sa_sets, trs, tes, [cfg.seed] * len(trs)) if trs else []
    accounts = json.loads((sdir / "accounts.json").read_text())
    queries = {role: json.loads((sdir / role / "train.json").read_text())["queries"] for role in todo}
    repeats = sdir / "averaging" / "repeats.json"
    if out is None:
        h = torch.load(sdir / "honest.pt")
        clean = F.normalize(victim_clean[1], dim=1)
        out = {
            "label": setting.label, "family": setting.family, "defence": setting.defence, "paper": setting.paper,
            "TA_honest": probe(cfg, honest_sets, [h["train"]], [h["test"]], [cfg.seed])[0], "SA": {}, "queries": {},
            "honest_cos_to_clean": float(F.cosine_similarity(h["test"], clean, dim=1).mean()),
            "honest_answer_norm": float(h["test"].norm(dim=1).mean()),
        }
    out["SA"].update(dict(zip(names, accs)))
    out["queries"].update(queries)
    out["accounts"] = accounts
    out["averaging_repeats"] = json.loads(repeats.read_text()) if repeats.exists() else None
    done.write_text(json.dumps(out, indent=2))
    return out


# ---- reading the results ----------------------------------------------------------------------------------

def summarise(cfg: TradeoffConfig, rows: list[dict], reference: dict) -> dict:
    from stealkit.experiment.tradeoff import goal_check, pareto_front, queries_to_reach

    base = next(r for r in rows if not r["defence"])
    small, big = min(cfg.budgets), max(cfg.budgets)
    target = base["SA"][f"thief-{small}"]
    for r in rows:
        # the goal's thief: the protocol's budgets and the adaptive thieves; a budget beyond them only prices the defence
        within = {k: v for k, v in r["SA"].items() if not (k.startswith("thief-") and int(k.split("-")[1]) > big)}
        r["SA_worst"] = max(within.values())
        r["SA_worst_by"] = max(within, key=within.get)
        measured = {int(k.split("-")[1]): v for k, v in r["SA"].items() if k.startswith("thief-")}
        q, how = queries_to_reach(measured, target)
        r["cost_to_reach_undefended"] = {"target_SA": target, "queries": q, "how": how, "largest_budget": max(measured),
                                         "dollars": None if q is None else q * cfg.price_per_1000 / 1000.0}
        r["goal"] = goal_check(r["TA_honest"], base["TA_honest"], r["SA_worst"], reference["baseline_SA"], **cfg.goal)
    front = pareto_front([(r["TA_honest"], r["SA_worst"]) for r in rows])
    for i, r in enumerate(rows):
        r["pareto"] = i in front
    return {"pareto_front": [rows[i]["label"] for i in front], "undefended_SA_target": target,
            "budgets": cfg.budgets, "largest_budget": big}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--out", required=True)
    ap.add_argument("--run-dir", default=None, help="default runs/<config name>")
    ap.add_argument("--only", nargs="*", default=None, help="labels (or their slugs) to run; the JSON holds every finished one")
    args = ap.parse_args()

    from stealkit.attacks.base import attack_class
    from stealkit.models.checkpoint import checkpoint_exists, load_encoder, save_encoder
    from stealkit.probes.evaluate import probe_config_class
    from stealkit.runtime import environment, precision_record
    from stealkit.experiment.shadows import resolve_defence

    t_start = time.time()
    raw = yaml.safe_load(Path(args.config).read_text())
    cfg = TradeoffConfig(**{k: v for k, v in raw.items() if not k.startswith("x-")})  # x-*: YAML anchors only
    run_dir = Path(args.run_dir or f"runs/{cfg.name}")
    run_dir.mkdir(parents=True, exist_ok=True)
    labels = [s.label for s in cfg.settings]
    if len(set(map(slug, labels))) != len(labels):
        raise SystemExit(f"{args.config}: two settings share a label: {labels}")
    if not any(s.defence is None for s in cfg.settings):
        raise SystemExit(f"{args.config}: needs one setting without a defence (the undefended reference)")
    honest_sets = (images_of({**cfg.honest, "split": "train"}, cfg.honest.get("train_limit"), cfg.seed),
                   images_of({**cfg.honest, "split": "test"}, cfg.honest.get("test_limit"), cfg.seed))
    train, test = honest_sets
    sa_sets = (train, test.sample(cfg.sa_test_limit, seed=cfg.seed) if cfg.sa_test_limit and cfg.sa_test_limit < len(test) else test)
    every_budget = sorted(set(cfg.budgets).union(*(s.budgets or [] for s in cfg.settings)))  # a setting may price beyond
    surrogates = {b: images_of(cfg.surrogate, b, cfg.seed) for b in every_budget}
    victim = load_encoder(cfg.victim["checkpoint"])
    vc_path = run_dir / "victim_clean.pt"
    if not vc_path.exists():
        torch.save(clean_features(victim, honest_sets), vc_path)
    victim_clean = torch.load(vc_path)

    # the no-query baseline and the probe's seed spread (once)
    ref_path = run_dir / "reference.json"
    if not ref_path.exists():
        t0 = time.perf_counter()
        bdir = run_dir / "baseline"
        if not checkpoint_exists(bdir / "stolen"):
            attack = attack_class("pretrain-encoder")(dict(cfg.baseline))
            res = attack.steal(None, surrogates[max(cfg.budgets)], device="cpu", workdir=bdir, progress=False)
            save_encoder(res.encoder, bdir / "stolen", role="pretrain-encoder baseline")
        base_enc = load_encoder(bdir / "stolen")
        seeds = [cfg.seed + i for i in range(cfg.probe_seeds)]
        vtr, vte = victim_clean
        ntr, nte = F.normalize(vtr, dim=1), F.normalize(vte, dim=1)
        btr, bte = clean_features(base_enc, sa_sets)
        ta = probe(cfg, honest_sets, [ntr] * len(seeds), [nte] * len(seeds), seeds)
        accs = probe(cfg, sa_sets, [btr], [bte], [cfg.seed])
        mean = sum(ta) / len(ta)
        std = (sum((a - mean) ** 2 for a in ta) / max(1, len(ta) - 1)) ** 0.5
        ref = {"TA_clean_normalised_by_seed": dict(zip(map(str, seeds), ta)), "TA_clean_mean": mean, "TA_clean_std": std,
               "baseline_SA": accs[-1], "baseline": cfg.baseline, "baseline_surrogate_size": max(cfg.budgets),
               "seconds": time.perf_counter() - t0}
        ref_path.write_text(json.dumps(ref, indent=2))
        log(f"reference: TA (normalised, {len(seeds)} probe seeds) {mean:.2f} ± {std:.2f}; pretrain-encoder SA {accs[-1]:.2f}")
    reference = json.loads(ref_path.read_text())

    rows = []
    for setting in cfg.settings:
        sdir = run_dir / slug(setting.label)
        sdir.mkdir(parents=True, exist_ok=True)
        if args.only is not None and setting.label not in args.only and slug(setting.label) not in args.only:
            if (sdir / "result.json").exists():
                rows.append(json.loads((sdir / "result.json").read_text()))
            continue
        t0 = time.perf_counter()
        resolved = Setting(**{**setting.model_dump(), "defence": resolve_defence(setting.defence, device="cpu")})
        query_phase(cfg, resolved, sdir, honest_sets, surrogates)
        stolen = train_phase(cfg, resolved, sdir, surrogates)
        before = json.loads((sdir / "result.json").read_text())["SA"] if (sdir / "result.json").exists() else None
        row = evaluate_setting(cfg, setting, sdir, honest_sets, sa_sets, victim_clean, stolen)
        if before is None or set(before) != set(row["SA"]):  # work was done: count its time
            row["wall_seconds"] = row.get("wall_seconds", 0.0) + time.perf_counter() - t0
        (sdir / "result.json").write_text(json.dumps(row, indent=2))
        log(f"{setting.label}: TA-honest {row['TA_honest']:.2f}, SA " + ", ".join(f"{k} {v:.2f}" for k, v in row["SA"].items()))
        rows.append(row)
    if not any(not r["defence"] for r in rows):
        raise SystemExit("the undefended setting has no result yet: run it first (it is every row's reference)")
    summary = summarise(cfg, rows, reference)
    out = {"name": cfg.name, "description": cfg.description, "config": cfg.model_dump(), "environment": environment(),
           "precision": precision_record(torch.device("cpu")), "seed": cfg.seed, "probe": cfg.probe,
           "probe_resolved": probe_config_class(cfg.probe["kind"]).make(**cfg.probe.get("config", {})).model_dump(),
           "reference": reference, "rows": rows,
           **summary, "wall_seconds_this_invocation": time.time() - t_start,
           "wall_seconds": sum(r.get("wall_seconds", 0) for r in rows) + reference.get("seconds", 0)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    log(f"wrote {args.out}: {len(rows)} settings; Pareto front: {summary['pareto_front']}")


if __name__ == "__main__":
    main()
