"""Suspect encoders of the ownership benchmarks (dataset_inference_real.py, watermark_real.py): how each is
loaded and what is known of how it was made.

    LABEL=CHECKPOINT          an encoder written by stealkit (its sidecar says how it was made)
    LABEL=random:ARCH:SEED    a randomly initialised network
    --run DIR                 every stolen row of an experiment run (rows/<key>/stolen), kind "stolen"
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def load_suspect(spec: str):
    """'random:ARCH:SEED' -> a randomly initialised encoder; else a stealkit checkpoint path -> (encoder, about)."""
    if spec.startswith("random:"):
        from stealkit.models.encoder import build_encoder

        _, arch, seed = spec.split(":")
        torch.manual_seed(int(seed))
        return build_encoder(arch, input_size=32).eval(), {"made": f"randomly initialised {arch} (seed {seed})", "queries": 0}
    from stealkit.models.checkpoint import load_encoder, read_sidecar

    side = read_sidecar(spec)
    about = {"made": side.get("made") or side.get("attack") or side.get("method") or "", "queries": side.get("queries")}
    return load_encoder(spec).eval(), about


def run_suspects(run: str | Path, kind: str = "stolen") -> list[tuple[str, str, str, str]]:
    """Every row of an experiment run's results.json -> (label, checkpoint, kind, how it was made)."""
    out = []
    for row in json.loads((Path(run) / "results.json").read_text())["rows"]:
        label = f"{row['label']}, {row['queries']:,} queries"
        cost = f", ${row['cost']:.2f}" if row.get("cost") is not None else ""
        about = (f"{row['label']} ({row['settings']}) through the served API, {row['surrogate']}, "
                 f"{row['queries']:,} queries billed{cost}")
        out.append((label, str(Path(run) / "rows" / row["key"] / "stolen"), kind, about))
    return out
