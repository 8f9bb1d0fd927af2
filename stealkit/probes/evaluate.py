"""Downstream evaluation: features -> probe -> accuracy, for one feature set or many encoders.

StolenEncoder (Liu et al., CCS'22), Section V-A 3) and V-A 5): TA is the test accuracy of a
downstream classifier trained on the target encoder's features, SA the same for the stolen
encoder; both use the paper's MLP classifier by default. Accuracies here are fractions in [0, 1]
(the paper prints percentages). `mlp` is the probe as the authors released it (L2-normalised
features, Dropout(0.5)); `mlp-raw` is the same network on raw features without dropout. `prediction_agreement` is the fidelity of two classifiers' test
predictions.
"""

from __future__ import annotations

import os
import time
from typing import Mapping, Sequence

import torch

from stealkit.probes.features import FeatureCache, extract_features
from stealkit.probes.knn import knn_predict
from stealkit.probes.linear import train_linear_probes
from stealkit.probes.mlp import ProbeResult, per_probe, train_probes

PROBES = ("mlp", "mlp-raw", "linear", "knn")


def _as_dict(r: ProbeResult, probe: str) -> dict:
    return {"probe": probe, "accuracy": r.accuracy, "predictions": r.predictions, "seconds": r.seconds,
            "train_accuracy": r.train_accuracy, "final_loss": r.final_loss, "history": r.history, "config": r.config}


def evaluate_feature_sets(train_feats: Sequence[torch.Tensor], train_labels, test_feats: Sequence[torch.Tensor],
                          test_labels, probe: str = "mlp", num_classes: int | None = None,
                          device: torch.device | str | None = None, **probe_cfg) -> list[dict]:
    """P feature sets (N×D_p train, M×D_p test; labels shared or one per set) -> P result dicts.

    mlp and linear (Adam) train all P probes in one batched model; knn and linear (L-BFGS) loop.
    """
    if probe in ("mlp", "mlp-raw"):
        return [_as_dict(r, probe) for r in train_probes(train_feats, train_labels, test_feats, test_labels,
                                                         num_classes, device=device,
                                                         config_class=probe_config_class(probe), **probe_cfg)]
    if probe == "linear":
        return [_as_dict(r, probe) for r in train_linear_probes(train_feats, train_labels, test_feats, test_labels,
                                                                num_classes, device=device, **probe_cfg)]
    if probe == "knn":
        xs, ys, xt, yt = per_probe(train_feats, train_labels, test_feats, test_labels)
        P = len(xs)
        from stealkit.probes.knn import KNNConfig

        probe_cfg = {k: v for k, v in probe_cfg.items() if k not in ("seeds", "progress")}  # a kNN has no randomness or epochs
        cfg = KNNConfig.make(**probe_cfg).model_dump()
        out = []
        for p in range(P):
            t0 = time.perf_counter()
            pred = knn_predict(xs[p], ys[p], xt[p], num_classes=num_classes, device=device, **cfg)
            acc = float((pred == yt[p].cpu().long()).float().mean()) if len(pred) else float("nan")
            out.append({"probe": probe, "accuracy": acc, "predictions": pred, "seconds": time.perf_counter() - t0,
                        "config": dict(cfg, num_classes=num_classes)})
        return out
    raise ValueError(f"unknown probe {probe!r}; choose one of {PROBES}")


def probe_config_class(kind: str):
    """The strict settings model of a probe kind (the registry of probes: PROBES)."""
    from stealkit.probes.knn import KNNConfig
    from stealkit.probes.linear import LinearConfig
    from stealkit.probes.mlp import MLPConfig, MLPRawConfig

    classes = {"mlp": MLPConfig, "mlp-raw": MLPRawConfig, "linear": LinearConfig, "knn": KNNConfig}
    if kind not in classes:
        import difflib

        close = difflib.get_close_matches(kind, PROBES, n=1)
        raise ValueError(f"unknown probe {kind!r}{f' (did you mean {close[0]!r}?)' if close else ''}; choose one of {', '.join(PROBES)}")
    return classes[kind]


def validate_probe(kind: str, config: dict) -> None:
    """Check a probe's kind and settings without training (ValueError naming the problem)."""
    probe_config_class(kind).make(**dict(config or {}))


def evaluate_features(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                      test_labels: torch.Tensor, probe: str = "mlp", num_classes: int | None = None,
                      device: torch.device | str | None = None, **probe_cfg) -> dict:
    """train N×D, test M×D features and labels -> dict(accuracy, predictions (M), seconds, probe, config, ...)."""
    return evaluate_feature_sets([train_feats], train_labels, [test_feats], test_labels, probe, num_classes,
                                 device, **probe_cfg)[0]


def prediction_agreement(pred_a: torch.Tensor, pred_b: torch.Tensor) -> float:
    """Fraction of test samples on which two classifiers predict the same label."""
    a, b = torch.as_tensor(pred_a).cpu().long(), torch.as_tensor(pred_b).cpu().long()
    if a.shape != b.shape:
        raise ValueError(f"prediction shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a == b).float().mean()) if a.numel() else float("nan")


def evaluate_encoders(encoders: Mapping[str, object], downstream: Mapping[str, tuple], probe: str = "mlp",
                      device: torch.device | str | None = None, cache: FeatureCache | str | os.PathLike | None = None,
                      extract_batch_size: int = 512, **probe_cfg) -> dict[str, dict[str, dict]]:
    """{name: Encoder}, {dataset: (train ImageSet, test ImageSet)} -> results[encoder][dataset] -> dict.

    Features are extracted once per (encoder, set), through `cache` if given (a FeatureCache or a
    directory); for each dataset the probes of all encoders train together in one batched model
    (mlp, linear). `extract_batch_size` is the encoder's batch; probe_cfg goes to the probe
    (e.g. epochs=100, batch_size=256, k=200). Each result has accuracy, predictions, seconds,
    feature_dim, n_train, n_test, feature_seconds.
    """
    from stealkit.runtime import pick_device

    device = pick_device(None if device is None else str(device))
    if cache is not None and not isinstance(cache, FeatureCache):
        cache = FeatureCache(cache)
    results: dict[str, dict[str, dict]] = {name: {} for name in encoders}
    for ds_name, (train_set, test_set) in downstream.items():
        feats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        feat_seconds: dict[str, float] = {}
        for enc_name, enc in encoders.items():
            t0 = time.perf_counter()
            pair = []
            for split, s in (("train", train_set), ("test", test_set)):
                if cache is not None and isinstance(enc, torch.nn.Module):
                    key = f"{ds_name}/{split}/{getattr(s, 'name', split)}"
                    pair.append(cache.features(enc, s, dataset=key, batch_size=extract_batch_size, device=device))
                else:
                    pair.append(extract_features(enc, s, batch_size=extract_batch_size, device=device))
            feats[enc_name] = (pair[0], pair[1])
            feat_seconds[enc_name] = time.perf_counter() - t0
        names = list(encoders)
        num_classes = len(getattr(train_set, "classes", []) or []) or None
        out = evaluate_feature_sets([feats[n][0] for n in names], train_set.labels, [feats[n][1] for n in names],
                                    test_set.labels, probe, num_classes, device, **probe_cfg)
        for n, r in zip(names, out):
            r.update(feature_dim=int(feats[n][0].shape[1]), n_train=len(train_set), n_test=len(test_set),
                     feature_seconds=feat_seconds[n])
            results[n][ds_name] = r
    return results


def relative_to(results: dict[str, dict[str, dict]], reference: str) -> dict[str, dict[str, dict]]:
    """Per encoder and dataset: accuracy ratio to `reference` (the paper's SA/TA) and prediction agreement."""
    ref = results[reference]
    return {
        name: {
            ds: {"ratio": r["accuracy"] / ref[ds]["accuracy"] if ref[ds]["accuracy"] else float("nan"),
                 "agreement": prediction_agreement(r["predictions"], ref[ds]["predictions"])}
            for ds, r in per_ds.items() if ds in ref
        }
        for name, per_ds in results.items()
    }
