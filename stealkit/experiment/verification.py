"""Ownership verification inside an experiment (Dziedzic et al., ICML 2022 and NeurIPS 2022): dataset inference and the rotation watermark
on every stolen encoder of a run, against its victim, plus optional reference encoders.

The config's `verify:` block (unknown keys fail with the list of allowed ones):

    verify:
      dataset_inference:                  # GMM log-likelihoods, one-sided t-test (verify/dataset_inference.py)
        private: {name: cifar10, split: train, limit: 50000}  # the victim's training images; default: its
                                          #   pre-training data (victim.pretrain.data, or the checkpoint's train_config)
        private_limit: 1000               # use a random subset of the private set
        public: {name: cifar10, split: test, limit: 1000}     # same distribution, never trained on
        threshold: 0.01                   # verdict "stolen" when p < threshold (the blog's 1%)
        fit_fraction: 0.5                 # part of the private subset the GMM is fitted on
        n_components: 20                  # the released script's
        covariance_type: diag             # the released script's (at ImageNet scale)
        fit_on: suspect                   # the released script; or victim
        views: crop                       # RandomResizedCrop views (released); or none
        test: student                     # pooled-variance t-test (released); or welch
        normalize: true
      watermark:                          # only for victims with a .wmhead.safetensors beside their checkpoint
        images: {name: cifar10, split: test, limit: 1000}
        head: null                        # explicit head path (else beside the victim checkpoint)
        threshold: 0.01
      independent:                        # reference encoder(s) not derived from the victim: a checkpoint or a
        label: independent                #   pre-training spec (cached like victims); one dict or a list
        pretrain: {method: simclr, arch: resnet18, data: {name: stl10, split: unlabeled}, epochs: 100}
      victim: false                       # also check the victim itself (sanity: small p-values)

Results: every stolen row gets `row["verification"] = {"dataset_inference": {"p_value", "verdict", ...},
"watermark": {...}, "dataset_inference (independent)": {...}, ...}`; the reference entries (suffix
` (label)`) are the same for every row of one victim, so the report's "<check> p" columns show stolen
and independent encoders side by side. Everything also goes to `verification.json` in the run directory.
Public images that also occur in the private set are dropped before the test.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stealkit.experiment.specs import VictimSpec
from stealkit.pretrain.config import DataSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetInferenceSpec(_Strict):
    private: DataSpec | None = None
    private_limit: int | None = None
    public: DataSpec
    threshold: float = Field(0.01, gt=0, lt=1)  # the blog's 1%
    fit_fraction: float = Field(0.5, gt=0, lt=1)
    n_components: int = Field(20, ge=1)
    covariance_type: Literal["diag", "full", "spherical", "tied"] = "diag"
    fit_on: Literal["victim", "suspect"] = "suspect"  # the released script
    normalize: bool = True
    views: Literal["crop", "none"] = "crop"  # RandomResizedCrop views, as the released script
    test: Literal["student", "welch"] = "student"
    batch_size: int = Field(512, ge=1)


class WatermarkSpec(_Strict):
    images: DataSpec
    head: str | None = None
    threshold: float = 0.01
    batch_size: int = 512


class VerifySpec(_Strict):
    dataset_inference: DatasetInferenceSpec | None = None
    watermark: WatermarkSpec | None = None
    independent: list[VictimSpec] | None = None
    victim: bool = False

    @field_validator("independent", mode="before")
    @classmethod
    def _listify(cls, v):
        return [v] if isinstance(v, dict) else v


def _allowed(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the model reached by walking `loc` (for the error message)."""
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            break
        ann = field.annotation
        nxt = None
        for cand in getattr(ann, "__args__", ()) + (ann,):
            for inner in getattr(cand, "__args__", ()) + (cand,):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    nxt = inner
        if nxt is None:
            break
        model = nxt
    return sorted(model.model_fields)


def parse_verify(raw: dict | None) -> VerifySpec | None:
    """The `verify:` block -> VerifySpec; unknown or malformed keys raise ValueError naming them."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError(f"verify must be a mapping with keys {sorted(VerifySpec.model_fields)}, got {type(raw).__name__}")
    try:
        spec = VerifySpec(**raw)
    except ValidationError as exc:
        msgs = []
        for e in exc.errors():
            where = "verify." + ".".join(str(p) for p in e["loc"])
            if e["type"] == "extra_forbidden":
                msgs.append(f"{where}: unknown key; allowed there: {', '.join(_allowed(VerifySpec, e['loc']))}")
            else:
                msgs.append(f"{where}: {e['msg']}")
        raise ValueError("bad verify config:\n  " + "\n  ".join(msgs)) from None
    if spec.dataset_inference is None and spec.watermark is None:
        raise ValueError("verify needs at least one of 'dataset_inference' or 'watermark'")
    return spec


def _image_hashes(images: torch.Tensor) -> list[str]:
    return [hashlib.sha1(x.contiguous().numpy().tobytes()).hexdigest() for x in images]


def _victim_spec(run, victim_key: str) -> dict | None:
    from stealkit.experiment.victims import spec_key

    for v in run.cfg.victim_list():
        d = v.model_dump()
        if spec_key(d) == victim_key:
            return d
    return None


def _private_spec(run, victim_key: str, info: dict, di: DatasetInferenceSpec) -> DataSpec:
    if di.private is not None:
        return di.private
    spec = _victim_spec(run, victim_key) or {}
    if spec.get("pretrain"):
        return DataSpec(**spec["pretrain"]["data"])
    if info.get("checkpoint"):
        from stealkit.models.checkpoint import read_sidecar

        data = (read_sidecar(Path(info["checkpoint"])).get("train_config") or {}).get("data")
        if data:
            return DataSpec(**data)
    raise ValueError(
        f"verify.dataset_inference.private: the victim {info.get('checkpoint') or victim_key} does not record its "
        "training data; give the victim's private training set explicitly (e.g. {name: cifar10, split: train})"
    )


class _VictimChecks:
    """Everything fixed per victim: its data for the tests, its watermark head, its reference results."""

    def __init__(self, run, victim_key: str, victim, info: dict, spec: VerifySpec, device):
        from stealkit.experiment.victims import load_data

        self.victim, self.spec, self.device, self.seed = victim, spec, device, run.cfg.seed
        self.notes: dict[str, str] = {}
        self.gmm_cache: dict = {}  # the victim's mixture, fitted once for all suspects
        root = run.cfg.data_root
        di = spec.dataset_inference
        if di is not None:
            pspec = _private_spec(run, victim_key, info, di)
            private = load_data(pspec, root)
            if di.private_limit is not None and di.private_limit < len(private):
                private = private.sample(di.private_limit, seed=self.seed)
            public = load_data(di.public, root)
            seen = set(_image_hashes(private.images))
            keep = torch.tensor([h not in seen for h in _image_hashes(public.images)], dtype=torch.bool)
            self.private, self.public = private.images, public.images[keep]
            self.di_data = {"private": private.name, "public": public.name, "public_dropped_as_private": int((~keep).sum())}
        self.head = None
        wm = spec.watermark
        if wm is not None:
            from stealkit.verify.watermark import head_path, load_watermark_head

            hp = Path(wm.head) if wm.head else (head_path(info["checkpoint"]) if info.get("checkpoint") else None)
            if hp is not None and hp.exists():
                self.head = load_watermark_head(hp)
                images = load_data(wm.images, root)
                self.wm_images, self.wm_data = images.images, {"images": images.name, "head": str(hp)}
            else:
                self.notes["watermark"] = f"no watermark head at {hp}" if hp else "victim has no checkpoint path"

    def check(self, encoder) -> dict:
        from stealkit.verify.dataset_inference import dataset_inference
        from stealkit.verify.watermark import watermark_accuracy

        out = {}
        on_device = encoder.to(self.device) if isinstance(encoder, torch.nn.Module) else encoder
        victim = self.victim.to(self.device)
        try:
            di = self.spec.dataset_inference
            if di is not None:
                fit_on, note = di.fit_on, {}
                if fit_on == "victim" and getattr(encoder, "feature_dim", None) not in (None, getattr(victim, "feature_dim", None)):
                    fit_on = "suspect"  # the victim's GMM cannot score features of another width: said in the result
                    note = {"fit_on_note": f"fit_on 'victim' asked, but this encoder's features are {encoder.feature_dim}-d and "
                                           f"the victim's {victim.feature_dim}-d: the mixture was fitted on the suspect"}
                r = dataset_inference(
                    victim, on_device, self.private, self.public, fit_fraction=di.fit_fraction, n_components=di.n_components,
                    covariance_type=di.covariance_type, fit_on=fit_on, normalize=di.normalize, alpha=di.threshold,
                    seed=self.seed, batch_size=di.batch_size, gmm_cache=self.gmm_cache, views=di.views, test=di.test,
                )
                out["dataset_inference"] = {**r.to_dict(), **self.di_data, **note}
            wm = self.spec.watermark
            if wm is not None:
                if self.head is None:
                    out["watermark"] = {"p_value": None, "skipped": self.notes["watermark"]}
                else:
                    r = watermark_accuracy(on_device, self.head, self.wm_images, alpha=wm.threshold, batch_size=wm.batch_size)
                    out["watermark"] = {**r.to_dict(), **self.wm_data}
        finally:
            if isinstance(encoder, torch.nn.Module) and str(self.device) != "cpu":
                encoder.to("cpu")
        return out


def _references(run, victim_key: str, victim, checks: _VictimChecks, spec: VerifySpec, device) -> dict:
    """{"<check> (<label>)": result} for the victim itself (when asked) and each independent encoder."""
    from stealkit.experiment.victims import get_victim

    refs = {}
    encoders = []
    if spec.victim:
        encoders.append(("victim", victim))
    for i, ind in enumerate(spec.independent or []):
        label = ind.label or ("independent" if len(spec.independent) == 1 else f"independent{i + 1}")
        enc, _ = get_victim(ind.model_dump(), run.cfg.data_root, str(device), run.cfg.progress, run.echo)
        encoders.append((label, enc))
    for label, enc in encoders:
        for check, res in checks.check(enc).items():
            refs[f"{check} ({label})"] = res
    return refs


def _fmt(res: dict) -> str:
    p = res.get("p_value")
    if p is None:
        return res.get("skipped", "—")
    extra = f", acc {res['accuracy']:.3f}" if "accuracy" in res else ""
    return f"p={p:.2g}{extra} -> {res['verdict']}"


def verify_rows(run, victims: dict, rows: list, device) -> None:
    """Run the `verify:` checks of `run.cfg` on every stolen encoder in `rows` (RowResults) and the references;
    sets each row's `verification` and writes verification.json into the run directory."""
    spec = parse_verify(run.cfg.verify)
    if spec is None:
        return
    t0 = time.perf_counter()
    per_victim, summary = {}, {"spec": spec.model_dump(), "victims": {}, "rows": {}}
    for vkey, (venc, vinfo) in victims.items():
        checks = _VictimChecks(run, vkey, venc, vinfo, spec, device)
        refs = _references(run, vkey, venc, checks, spec, device)
        per_victim[vkey] = (checks, refs)
        summary["victims"][vkey] = {"references": refs, "notes": checks.notes}
        for name, res in refs.items():
            run.echo(f"verify {name}: {_fmt(res)}")
    for r in rows:
        checks, refs = per_victim[r.victim_key]
        res = checks.check(r.encoder)
        for name, val in res.items():
            run.echo(f"verify {name} of {r.label}: {_fmt(val)}")
        r.verification = {**res, **refs}
        summary["rows"][r.key] = {"label": r.label, "victim_key": r.victim_key, **res}
        run.metric(stage="verify", row=r.key, **{k: v.get("p_value") for k, v in res.items()})
    summary["seconds"] = time.perf_counter() - t0
    (run.dir / "verification.json").write_text(json.dumps(summary, indent=2, default=str))
