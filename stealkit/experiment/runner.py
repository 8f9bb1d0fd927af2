"""Experiment runner: `stealkit run CONFIG` -> a run directory with results.json, report.md, plots.

Stages per config: validate every row (before any work) -> victims (cached by settings) -> one attack
per row (queries cached, training resumable, stolen encoder saved) -> downstream probes for the victim
and all stolen encoders of a downstream set trained together -> TA, SA, SA/TA, #queries, cost,
fidelity, the defence's cost to honest users -> report. Work already done (victim, queries, stolen
encoder, finished rows) is skipped on a rerun; a finished row is also kept under
STEALKIT_CACHE/rows/<row key>, so another config with the same row (same attack settings, seed,
surrogate, victim bytes, answers) reuses it. A run that produced no result is an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from stealkit.attacks.base import attack_class
from stealkit.data import DatasetNotFound, load_dataset
from stealkit.defences import build_defence
from stealkit.experiment.config import ExperimentConfig, VictimSpec
from stealkit.experiment.report import write_report
from stealkit.experiment.rows import Row, RowResult
from stealkit.experiment.shadows import resolve_defence, resolved_settings
from stealkit.experiment.victims import get_victim, load_data, spec_key
from stealkit.models.checkpoint import checkpoint_exists, load_encoder, save_encoder
from stealkit.probes.evaluate import evaluate_feature_sets, prediction_agreement, probe_config_class
from stealkit.probes.features import FeatureCache, extract_features
from stealkit.runtime import environment, pick_device, precision_record
from stealkit.targets import LocalTarget
from stealkit.userinput import UserError


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


def _make_target(cfg: ExperimentConfig, victim, defence, row_dir: Path):
    if cfg.target is not None:
        from stealkit.targets.remote import RemoteTarget

        key = cfg.target.api_key or os.environ.get(cfg.target.api_key_env or "", "")
        if not key:
            raise UserError(f"target.url is set but no API key: give target.api_key or set ${cfg.target.api_key_env}")
        return RemoteTarget(cfg.target.url, key, budget=cfg.budget, cache_dir=cfg.target.cache_dir or row_dir / "http_cache")
    return LocalTarget(victim, defence=defence, budget=cfg.budget, account="attacker", normalize=cfg.normalize_answers)


def attack_config(row: Row) -> dict:
    """The row's attack config as the attack needs it in this experiment (its `with_victim` hook)."""
    return attack_class(row.attack["name"]).with_victim(dict(row.attack.get("config") or {}), row.victim, row.seed)


def _surrogate(row: Row, victim_info: dict, data_root):
    from stealkit.pretrain.config import DataSpec

    s = dict(row.surrogate)
    frac = s.pop("fraction_of_victim", None)
    if frac is not None and s.get("limit") is None:
        if not victim_info.get("dataset_size"):
            raise UserError("surrogate.fraction_of_victim needs the victim's pre-training set size (stealkit import "
                            "--dataset-size N records it); give surrogate.limit instead")
        s["limit"] = max(1, round(frac * victim_info["dataset_size"]))
    return load_data(DataSpec(**s), data_root)


def row_key(row: Row, cfg: ExperimentConfig, victim_digest: str | None) -> str:
    """Cache key of a row's queries and stolen encoder: the row (its seed included), the attack's config and
    the defence's settings as resolved (defaults included), plus everything outside them that changes what
    is stolen: budget, data root, what answers over HTTP, normalised answers, and the victim checkpoint's bytes."""
    target = (cfg.target.identity or cfg.target.url) if cfg.target is not None else None
    attack = attack_class(row.attack["name"])(attack_config(row)).config.model_dump()
    extra = {"normalize_answers": True} if cfg.normalize_answers else {}
    if row.defence:
        extra["defence_resolved"] = resolved_settings(row.defence)
    return spec_key({**row.as_dict(), "attack_resolved": attack, "budget": cfg.budget, "data_root": cfg.data_root,
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


def steal_row(run: Run, row: Row, victim, victim_info: dict, device) -> RowResult:
    cfg = run.cfg
    key = row_key(row, cfg, victim_info.get("checkpoint_sha256"))
    label = row.label(with_seed=len(cfg.seed_list()) > 1)
    row_dir = run.dir / "rows" / key
    row_dir.mkdir(parents=True, exist_ok=True)
    stolen_path = row_dir / "stolen"
    steal_file = row_dir / "steal.json"
    name = VictimSpec(**row.victim).display()
    shared = row_cache_dir(key)
    if not (checkpoint_exists(stolen_path) and steal_file.exists()) and _finished_row(shared):
        _copy_row(shared, row_dir)
        run.echo(f"[{label}] finished row {key} found in {shared.parent}")
    if checkpoint_exists(stolen_path) and steal_file.exists():
        run.echo(f"[{label}] stolen encoder cached")
        cached = json.loads(steal_file.read_text())
        cached["cost"] = cached["queries"] * cfg.price_per_1000 / 1000.0  # at today's price, not the cached one
        cached.pop("key", None)
        cached["label"] = label
        return RowResult(row=row, key=key, victim=name, encoder=load_encoder(stolen_path), **cached)
    surrogate = _surrogate(row, victim_info, cfg.data_root)
    attack = attack_class(row.attack["name"])(attack_config(row))
    batch = getattr(attack.config, "batch_size", None)
    if batch is not None and len(surrogate) < batch:  # before a single query is paid
        raise UserError(f"[{label}] the surrogate set has {len(surrogate)} images, fewer than one batch ({batch}); "
                        "nothing was queried — use more images or a smaller batch_size")
    defence = build_defence(resolve_defence(row.defence, device=str(device)))
    target = _make_target(cfg, victim, defence, row_dir)
    run.echo(f"[{label}] stealing with {len(surrogate)} surrogate images from {surrogate.name} ({attack.describe()})")
    result = attack.steal(target, surrogate, device=device, workdir=row_dir, progress=cfg.progress)
    save_encoder(result.encoder, stolen_path, attack=row.attack, surrogate=surrogate.name, queries=result.queries, seed=row.seed)
    out = RowResult(row=row, key=key, label=label, victim=name, queries=result.queries,
                    cost=result.queries * cfg.price_per_1000 / 1000.0, surrogate=surrogate.name, surrogate_size=len(surrogate),
                    query_seconds=result.query_seconds, train_seconds=result.train_seconds,
                    queries_from_cache=result.info.get("queries_from_cache", 0), settings=attack.describe(), log=result.log,
                    encoder=result.encoder)
    steal_file.write_text(json.dumps(out.steal_record(), indent=2, default=str))
    _copy_row(row_dir, shared)
    run.metric(stage="steal", row=key, **{k: v for k, v in out.steal_record().items() if k != "log"})
    return out


ROW_FILES = ("stolen.safetensors", "stolen.json", "steal.json")


def row_cache_dir(key: str) -> Path:
    """Where a finished row (stolen encoder + steal.json) is kept for every run: STEALKIT_CACHE/rows/<key>."""
    from stealkit.data.cache import resolve_cache_dir

    return resolve_cache_dir() / "rows" / key


def _finished_row(folder: Path) -> bool:
    return all((folder / f).exists() for f in ROW_FILES)


def _copy_row(src: Path, dst: Path) -> None:
    """Copy a finished row's files; each lands under a temporary name first, steal.json (the mark of a
    finished row) last, so a reader never sees half a row."""
    if not _finished_row(src) or src.resolve() == dst.resolve():
        return
    dst.mkdir(parents=True, exist_ok=True)
    for f in ROW_FILES:
        tmp = dst / (f + ".tmp")
        shutil.copyfile(src / f, tmp)
        os.replace(tmp, dst / f)


def _cosine_fidelity(a: torch.Tensor, b: torch.Tensor) -> float | None:
    if a.shape != b.shape:
        return None
    return float(F.cosine_similarity(a.float(), b.float(), dim=1).mean())


def _downstream_sets(cfg: ExperimentConfig, ds_spec):
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
    return root, train, test, tags


def evaluate_downstream(run: Run, ds_spec, victims: dict, rows: list[RowResult], device) -> None:
    """Probe the victim (clean and, with a defence, as honest users see it) and every stolen encoder on one set;
    with several seeds, one probe per seed for every entry (probe seed = the row's seed)."""
    cfg = run.cfg
    root, train, test, tags = _downstream_sets(cfg, ds_spec)
    ncls = max(train.num_classes, int(train.labels.max()) + 1)
    seeds = cfg.seed_list()

    def feats(enc, images, tag):
        return run.features.features(enc, images, f"{ds_spec.name}@{root}:{tag}", device=device,  # root: other files, other images
                                     progress=cfg.progress)

    names, tr_f, te_f, probe_seeds = [], [], [], []

    def add(name, tr, te, seed):
        names.append(name)
        tr_f.append(tr)
        te_f.append(te)
        probe_seeds.append(seed)

    for vkey, (venc, _) in victims.items():
        tr, te = feats(venc, train.images, tags["train"]), feats(venc, test.images, tags["test"])
        for seed in seeds:
            add(("victim", vkey, seed), tr, te, seed)
    # What honest users keep under each defence: the victim's answers as the defence returns them. In a defence
    # comparison with normalised answers, honest users of the undefended row see unit vectors too.
    compare = any(r.row.defence for r in rows) and cfg.normalize_answers
    honest_specs = {(r.victim_key, r.row.defence_key): r.row.defence for r in rows if r.row.defence or compare}
    for (vkey, dkey), dspec in honest_specs.items():
        defence = build_defence(resolve_defence(dspec, device=str(device)))
        honest = LocalTarget(victims[vkey][0], defence=defence, account="honest-user", normalize=cfg.normalize_answers)
        tr, te = extract_features(honest, train.images), extract_features(honest, test.images)
        for seed in seeds:
            add(("honest", vkey, dkey, seed), tr, te, seed)
    for r in rows:
        add(("stolen", r.key), feats(r.encoder, train.images, tags["train"]), feats(r.encoder, test.images, tags["test"]), r.row.seed)
    t0 = time.perf_counter()
    probe_cfg = dict(cfg.probe.config)
    if cfg.probe.kind != "knn":
        probe_cfg["seeds"] = probe_seeds
        probe_cfg.setdefault("progress", cfg.progress)
    run.echo(f"probing {ds_spec.name}: {len(names)} {cfg.probe.kind} probes on {len(train)} train / {len(test)} test images")
    results = evaluate_feature_sets(tr_f, train.labels, te_f, test.labels, cfg.probe.kind, ncls, device=device, **probe_cfg)
    seconds = time.perf_counter() - t0
    by = {n: (res, te) for n, res, te in zip(names, results, te_f)}
    for r in rows:
        seed = r.row.seed
        vres, vte = by[("victim", r.victim_key, seed)]
        sres, ste = by[("stolen", r.key)]
        hres = by.get(("honest", r.victim_key, r.row.defence_key, seed), (None, None))[0]
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
        r.downstream[ds_spec.name] = entry
        run.metric(stage="probe", row=r.key, dataset=ds_spec.name, **entry)
    run.stage_seconds[f"probe:{ds_spec.name}"] = seconds
    run.echo(f"probed {ds_spec.name}: {len(results)} {cfg.probe.kind} probes in {seconds:.1f}s")


def run_experiment(cfg: ExperimentConfig, run_dir: str | Path | None = None, echo=print) -> dict:
    """Run every row of `cfg`; returns the results dict also written to results.json."""
    from stealkit.experiment.validate import validate_config

    t_start = time.perf_counter()
    validate_config(cfg, check_files=True)  # every row, before any victim is trained or query paid
    run = Run(cfg, run_dir, echo)
    device = pick_device(cfg.device)
    rows_out: list[RowResult] = []
    victims, victim_infos, failures = {}, {}, []
    for row in cfg.rows():
        vkey = row.victim_key
        label = row.label(with_seed=len(cfg.seed_list()) > 1)
        try:
            if vkey not in victims:
                t0 = time.perf_counter()
                victims[vkey] = get_victim(row.victim, cfg.data_root, str(device), cfg.progress, echo)
                victim_infos[vkey] = victims[vkey][1]
                victim_infos[vkey]["checkpoint_sha256"] = _victim_digest(victim_infos[vkey])  # once per victim, not per row
                run.stage_seconds[f"victim:{vkey}"] = time.perf_counter() - t0
            venc, vinfo = victims[vkey]
            out = steal_row(run, row, venc, vinfo, device)
        except (DatasetNotFound, FileNotFoundError) as exc:
            echo(f"[{label}] skipped: {exc}")
            failures.append({"label": label, "victim": row.victim, "error": str(exc)})
            continue
        rows_out.append(out)
        _write_results(run, device, victim_infos, rows_out, failures, [], t_start, complete=False)
    missing_ds = []
    for ds in cfg.downstream:
        if not rows_out:
            break
        try:
            evaluate_downstream(run, ds, {k: victims[k] for k in {r.victim_key for r in rows_out}}, rows_out, device)
        except (DatasetNotFound, FileNotFoundError) as exc:
            echo(f"downstream {ds.name} skipped: {exc}")
            missing_ds.append({"dataset": ds.name, "error": str(exc)})
        _write_results(run, device, victim_infos, rows_out, failures, missing_ds, t_start, complete=False)
    if cfg.verify and rows_out:
        from stealkit.experiment.verification import verify_rows

        t0 = time.perf_counter()
        verify_rows(run, {k: victims[k] for k in {r.victim_key for r in rows_out}}, rows_out, device)
        run.stage_seconds["verify"] = time.perf_counter() - t0
    results = _write_results(run, device, victim_infos, rows_out, failures, missing_ds, t_start, complete=True)
    if not rows_out:
        raise UserError("no row could run: " + "; ".join(f"{f['label']}: {f['error']}" for f in failures)[:600]
                        + f" (what ran is in {run.dir / 'results.json'})")
    if cfg.downstream and len(missing_ds) == len(cfg.downstream):
        write_report(results, run.dir)
        raise UserError("no downstream set could be loaded (" + ", ".join(d["dataset"] for d in missing_ds)
                        + "): give --data-root or set STEALKIT_DATA; the stolen encoders are in " + str(run.dir / "rows"))
    write_report(results, run.dir)
    return results


def peak_rss_gib() -> float:
    """Peak resident memory of this process and its finished children so far, GiB (Linux reports KiB)."""
    kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return round(kib / 2**20, 3)


def _write_results(run: Run, device, victim_infos, rows_out: list[RowResult], failures, missing_ds, t_start, complete: bool) -> dict:
    """results.json as it stands; written after every stolen encoder and every downstream set, so a run
    cut off part-way (a time limit, a crash) still leaves what it finished ("complete": false)."""
    cfg = run.cfg
    results = {
        "name": cfg.name,
        "description": cfg.description,
        "complete": complete,
        "seed": cfg.seed,
        "seeds": cfg.seed_list(),
        "device": str(device),
        "precision": precision_record(device),
        "environment": environment(),
        "price_per_1000": cfg.price_per_1000,
        "normalize_answers": cfg.normalize_answers,
        "probe": cfg.probe.model_dump(),
        "probe_resolved": probe_config_class(cfg.probe.kind).make(**dict(cfg.probe.config)).model_dump(),
        "victims": {k: {kk: vv for kk, vv in v.items() if kk != "log"} for k, v in victim_infos.items()},
        "rows": [r.to_json() for r in rows_out],
        "failures": failures,
        "missing_downstream": missing_ds,
        "sweep": cfg.sweep.model_dump() if cfg.sweep else None,
        "stage_seconds": dict(run.stage_seconds),
        "wall_seconds": time.perf_counter() - t_start,
        "peak_rss_gib": peak_rss_gib(),
    }
    tmp = run.dir / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, default=str))
    os.replace(tmp, run.dir / "results.json")
    return results
