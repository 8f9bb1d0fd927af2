"""Experiment runner: `stealkit run CONFIG` -> a run directory with results.json, report.md, plot.png.

Stages per config: victims (cached by settings) -> one attack per row (queries cached, training
resumable, stolen encoder saved) -> downstream probes for victim and all stolen encoders of a
downstream set trained together -> TA, SA, SA/TA, #queries, cost, fidelity, defence cost -> report.
Work already done (victim, queries, stolen encoder, finished rows) is skipped on a rerun.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from stealkit.attacks import build_attack
from stealkit.data import DatasetNotFound, load_dataset
from stealkit.defences import build_defence
from stealkit.experiment.config import ExperimentConfig
from stealkit.experiment.report import write_report
from stealkit.experiment.shadows import resolve_defence
from stealkit.experiment.victims import get_victim, load_data, spec_key
from stealkit.models.checkpoint import checkpoint_exists, load_encoder, save_encoder
from stealkit.probes.evaluate import evaluate_feature_sets, prediction_agreement
from stealkit.probes.features import FeatureCache, extract_features
from stealkit.runtime import environment, pick_device
from stealkit.targets import LocalTarget


class Run:
    """A run directory: resolved config, metrics.jsonl log, per-row folders, results."""

    def __init__(self, cfg: ExperimentConfig, run_dir: str | Path | None = None, echo=print):
        self.cfg = cfg
        self.dir = Path(run_dir) if run_dir else Path(cfg.output_dir) / cfg.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.echo = echo
        (self.dir / "config.resolved.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
        self.features = FeatureCache(self.dir / "features")
        self.stage_seconds: dict[str, float] = {}

    def metric(self, **entry) -> None:
        entry = {"time": time.time(), **entry}
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(entry, default=str) + "\n")


def _row_label(row: dict) -> str:
    a = row["attack"]
    label = a.get("label") or a["name"]
    if row["defence"]:
        d = dict(row["defence"])
        label += " vs " + d.pop("name") + "(" + ",".join(f"{k}={v}" for k, v in d.items() if not isinstance(v, (dict, list))) + ")"
    if row["sweep"]:
        label += f" [{row['sweep']['param'].split('.')[-1]}={row['sweep']['value']}]"
    return label


def _make_target(cfg: ExperimentConfig, victim, defence, row_dir: Path):
    if cfg.target is not None:
        from stealkit.targets.remote import RemoteTarget

        key = cfg.target.api_key or os.environ.get(cfg.target.api_key_env or "", "")
        if not key:
            raise ValueError(f"target.url is set but no API key: give target.api_key or set ${cfg.target.api_key_env}")
        return RemoteTarget(cfg.target.url, key, budget=cfg.budget, cache_dir=cfg.target.cache_dir or row_dir / "http_cache")
    return LocalTarget(victim, defence=defence, budget=cfg.budget, account="attacker", normalize=cfg.normalize_answers)


def _attack_config(row: dict, victim_info: dict, cfg: ExperimentConfig) -> dict:
    """The row's attack config as the attack needs it in this experiment (its `with_victim` hook)."""
    from stealkit.attacks import ATTACKS

    cls = ATTACKS.get(row["attack"]["name"])
    if cls is None:
        build_attack(row["attack"]["name"])  # raises the "unknown attack" error
    return cls.with_victim(dict(row["attack"]["config"]), row["victim"], cfg.seed)


def _surrogate(row: dict, victim_info: dict, data_root):
    from stealkit.pretrain.config import DataSpec

    s = dict(row["surrogate"])
    frac = s.pop("fraction_of_victim", None)
    if frac is not None and s.get("limit") is None:
        if not victim_info.get("dataset_size"):
            raise ValueError("surrogate.fraction_of_victim needs the victim's pre-training set size; give surrogate.limit instead")
        s["limit"] = max(1, round(frac * victim_info["dataset_size"]))
    return load_data(DataSpec(**s), data_root)


def row_key(row: dict, cfg: ExperimentConfig, victim_digest: str | None) -> str:
    """Cache key of a row's queries and stolen encoder: the row, with the attack's config as resolved
    (defaults included), plus everything outside it that changes what is stolen: seed, budget, data
    root, what answers over HTTP, and the victim checkpoint's bytes (`victim_digest`, see `_victim_digest`)."""
    target = (cfg.target.identity or cfg.target.url) if cfg.target is not None else None
    attack = build_attack(row["attack"]["name"], _attack_config(row, {}, cfg)).config.model_dump()
    extra = {"normalize_answers": True} if cfg.normalize_answers else {}  # keys of raw-answer rows unchanged
    return spec_key({**row, "attack_resolved": attack, "seed": cfg.seed, "budget": cfg.budget, "data_root": cfg.data_root,
                     "target": target, "victim_file": victim_digest, **extra})


def _victim_digest(victim_info: dict) -> str | None:
    """SHA-256 of the victim's weights file (given, or pre-trained and cached: get_victim names it)."""
    from stealkit.models.checkpoint import weights_path

    return file_digest(weights_path(victim_info["checkpoint"])) if victim_info.get("checkpoint") else None


def file_digest(path: Path) -> str | None:
    """SHA-256 of a file's bytes (None if it does not exist)."""
    if not Path(path).exists():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def steal_row(run: Run, row: dict, victim, victim_info: dict, device) -> dict:
    cfg = run.cfg
    key = row_key(row, cfg, victim_info.get("checkpoint_sha256"))
    row_dir = run.dir / "rows" / key
    row_dir.mkdir(parents=True, exist_ok=True)
    stolen_path = row_dir / "stolen"
    steal_file = row_dir / "steal.json"
    if checkpoint_exists(stolen_path) and steal_file.exists():
        run.echo(f"[{_row_label(row)}] stolen encoder cached")
        cached = json.loads(steal_file.read_text())
        cached["cost"] = cached["queries"] * cfg.price_per_1000 / 1000.0  # at today's price, not the cached one
        return {**cached, "encoder": load_encoder(stolen_path)}
    surrogate = _surrogate(row, victim_info, cfg.data_root)
    defence = build_defence(resolve_defence(row["defence"], device=str(device)))
    target = _make_target(cfg, victim, defence, row_dir)
    attack = build_attack(row["attack"]["name"], _attack_config(row, victim_info, cfg))
    run.echo(f"[{_row_label(row)}] stealing with {len(surrogate)} surrogate images from {surrogate.name}")
    result = attack.steal(target, surrogate, device=device, workdir=row_dir, progress=cfg.progress)
    save_encoder(result.encoder, stolen_path, attack=row["attack"], surrogate=surrogate.name, queries=result.queries, seed=cfg.seed)
    info = {
        "key": key,
        "label": _row_label(row),
        "queries": result.queries,
        "cost": result.queries * cfg.price_per_1000 / 1000.0,
        "surrogate": surrogate.name,
        "surrogate_size": len(surrogate),
        "query_seconds": result.query_seconds,
        "train_seconds": result.train_seconds,
        "log": result.log,
        "queries_from_cache": result.info.get("queries_from_cache", 0),
    }
    steal_file.write_text(json.dumps(info, indent=2, default=str))
    run.metric(stage="steal", row=key, **{k: v for k, v in info.items() if k != "log"})
    return {**info, "encoder": result.encoder}


def _cosine_fidelity(a: torch.Tensor, b: torch.Tensor) -> float | None:
    if a.shape != b.shape:
        return None
    return float(F.cosine_similarity(a.float(), b.float(), dim=1).mean())


def evaluate_downstream(run: Run, ds_spec, victims: dict, rows: list[dict], device) -> None:
    """Probe victim (clean and, with a defence, as honest users see it) and every stolen encoder on one set."""
    cfg = run.cfg
    root = ds_spec.root or cfg.data_root
    train = load_dataset(ds_spec.name, ds_spec.train_split, root=root)
    test = load_dataset(ds_spec.name, ds_spec.test_split, root=root)
    tags = {"train": f"{ds_spec.train_split}[{len(train)}]", "test": f"{ds_spec.test_split}[{len(test)}]"}
    if ds_spec.train_limit and ds_spec.train_limit < len(train):
        train = train.sample(ds_spec.train_limit, seed=cfg.seed)
        tags["train"] = f"{ds_spec.train_split}[{len(train)}@seed{cfg.seed}]"  # which subset, not only how many
    if ds_spec.test_limit and ds_spec.test_limit < len(test):
        test = test.sample(ds_spec.test_limit, seed=cfg.seed)
        tags["test"] = f"{ds_spec.test_split}[{len(test)}@seed{cfg.seed}]"
    ncls = max(train.num_classes, int(train.labels.max()) + 1)

    def feats(enc, images, tag):
        return run.features.features(enc, images, f"{ds_spec.name}@{root}:{tag}", device=device)  # root: other files, other images

    names, tr_f, te_f = [], [], []
    for vkey, (venc, _) in victims.items():
        names.append(("victim", vkey))
        tr_f.append(feats(venc, train.images, tags["train"]))
        te_f.append(feats(venc, test.images, tags["test"]))
    # What honest users keep under each defence: the victim's answers as the defence returns them.
    # In a defence comparison with normalised answers, honest users of the undefended row see unit vectors too.
    compare = any(r["defence"] for r in rows) and cfg.normalize_answers
    for vkey, dkey, dspec in {(r["victim_key"], spec_key(r["defence"]), json.dumps(r["defence"], sort_keys=True))
                              for r in rows if r["defence"] or compare}:
        honest = LocalTarget(victims[vkey][0], defence=build_defence(resolve_defence(json.loads(dspec), device=str(device))),
                             account="honest-user",
                             normalize=cfg.normalize_answers)
        names.append(("honest", vkey, dkey))
        tr_f.append(extract_features(honest, train.images))
        te_f.append(extract_features(honest, test.images))
    for r in rows:
        names.append(("stolen", r["key"]))
        tr_f.append(feats(r["encoder"], train.images, tags["train"]))
        te_f.append(feats(r["encoder"], test.images, tags["test"]))
    t0 = time.perf_counter()
    results = evaluate_feature_sets(tr_f, train.labels, te_f, test.labels, cfg.probe.kind, ncls, device=device, **cfg.probe.config)
    seconds = time.perf_counter() - t0
    by = {n: (res, te) for n, res, te in zip(names, results, te_f)}
    for r in rows:
        vres, vte = by[("victim", r["victim_key"])]
        sres, ste = by[("stolen", r["key"])]
        hres = by.get(("honest", r["victim_key"], spec_key(r["defence"])), (None, None))[0]
        m = min(cfg.fidelity_limit, len(test))
        entry = {
            "TA": vres["accuracy"],
            "SA": sres["accuracy"],
            "SA/TA": sres["accuracy"] / vres["accuracy"] if vres["accuracy"] else None,
            "TA_defended": hres["accuracy"] if hres else None,
            "cosine_fidelity": _cosine_fidelity(vte[:m], ste[:m]),
            "agreement": prediction_agreement(vres["predictions"], sres["predictions"]),
            "train_size": len(train),
            "test_size": len(test),
        }
        r.setdefault("downstream", {})[ds_spec.name] = entry
        run.metric(stage="probe", row=r["key"], dataset=ds_spec.name, **entry)
    run.stage_seconds[f"probe:{ds_spec.name}"] = seconds
    run.echo(f"probed {ds_spec.name}: {len(results)} {cfg.probe.kind} probes in {seconds:.1f}s")


def run_experiment(cfg: ExperimentConfig, run_dir: str | Path | None = None, echo=print) -> dict:
    """Run every row of `cfg`; returns the results dict also written to results.json."""
    t_start = time.perf_counter()
    if cfg.verify:  # fail on a bad verify block now, not after hours of stealing
        from stealkit.experiment.verification import parse_verify

        parse_verify(cfg.verify)
    run = Run(cfg, run_dir, echo)
    device = pick_device(cfg.device)
    rows_out, victims, victim_infos, failures = [], {}, {}, []
    for row in cfg.rows():
        vkey = spec_key(row["victim"])
        label = _row_label(row)
        try:
            if vkey not in victims:
                t0 = time.perf_counter()
                victims[vkey] = get_victim(row["victim"], cfg.data_root, str(device), cfg.progress, echo)
                victim_infos[vkey] = victims[vkey][1]
                victim_infos[vkey]["checkpoint_sha256"] = _victim_digest(victim_infos[vkey])  # once per victim, not per row
                run.stage_seconds[f"victim:{vkey}"] = time.perf_counter() - t0
            venc, vinfo = victims[vkey]
            out = steal_row(run, row, venc, vinfo, device)
        except (DatasetNotFound, FileNotFoundError) as exc:
            echo(f"[{label}] skipped: {exc}")
            failures.append({"label": label, "victim": row["victim"], "error": str(exc)})
            continue
        out.update(victim_key=vkey, victim=_victim_name(row["victim"]), attack=row["attack"]["name"], sweep=row["sweep"], defence=row["defence"])
        rows_out.append(out)
        _write_results(run, device, victim_infos, rows_out, failures, [], t_start, complete=False)
    missing_ds = []
    for ds in cfg.downstream:
        if not rows_out:
            break
        try:
            evaluate_downstream(run, ds, {k: victims[k] for k in {r["victim_key"] for r in rows_out}}, rows_out, device)
        except (DatasetNotFound, FileNotFoundError) as exc:
            echo(f"downstream {ds.name} skipped: {exc}")
            missing_ds.append({"dataset": ds.name, "error": str(exc)})
        _write_results(run, device, victim_infos, rows_out, failures, missing_ds, t_start, complete=False)
    if cfg.verify and rows_out:
        from stealkit.experiment.verification import verify_rows

        t0 = time.perf_counter()
        verify_rows(run, {k: victims[k] for k in {r["victim_key"] for r in rows_out}}, rows_out, device)
        run.stage_seconds["verify"] = time.perf_counter() - t0
    results = _write_results(run, device, victim_infos, rows_out, failures, missing_ds, t_start, complete=True)
    write_report(results, run.dir)
    return results


def _write_results(run: Run, device, victim_infos, rows_out, failures, missing_ds, t_start, complete: bool) -> dict:
    """results.json as it stands; written after every stolen encoder and every downstream set, so a run
    cut off part-way (a time limit, a crash) still leaves what it finished ("complete": false)."""
    cfg = run.cfg
    results = {
        "name": cfg.name,
        "description": cfg.description,
        "complete": complete,
        "seed": cfg.seed,
        "device": str(device),
        "environment": environment(),
        "price_per_1000": cfg.price_per_1000,
        "probe": cfg.probe.model_dump(),
        "victims": {k: {kk: vv for kk, vv in v.items() if kk != "log"} for k, v in victim_infos.items()},
        "rows": [{k: v for k, v in r.items() if k not in ("encoder", "log")} for r in rows_out],
        "failures": failures,
        "missing_downstream": missing_ds,
        "sweep": cfg.sweep.model_dump() if cfg.sweep else None,
        "stage_seconds": dict(run.stage_seconds),
        "wall_seconds": time.perf_counter() - t_start,
    }
    tmp = run.dir / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, default=str))
    os.replace(tmp, run.dir / "results.json")
    return results


def _victim_name(v: dict) -> str:
    from stealkit.experiment.config import VictimSpec

    return VictimSpec(**v).display()
