"""The layering of docs/architecture.md: imports only go from a higher layer to a lower one (a defence never
imports the experiment layer or the server; an attack never imports the runner)."""

from __future__ import annotations

import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "stealkit"
LAYER = {
    **dict.fromkeys(("runtime", "registry", "userinput", "db", "augment", "augment_ops", "graph_step", "training"), 0),
    **dict.fromkeys(("data", "models", "losses"), 1),
    **dict.fromkeys(("targets", "defences", "probes", "verify", "pretrain"), 2),
    "attacks": 3, "experiment": 4, "service": 5, "cli": 6,
}


def test_no_import_goes_up_a_layer():
    upward = []
    for path in sorted(PKG.rglob("*.py")):
        top = path.relative_to(PKG).with_suffix("").parts[0]
        if top not in LAYER:
            assert top in ("__init__", "__main__"), f"{path}: put {top!r} in a layer of docs/architecture.md"
            continue
        for m in re.finditer(r"^\s*(?:from|import) stealkit\.(\w+)", path.read_text(), re.M):
            other = m.group(1)
            assert other in LAYER, f"{path} imports stealkit.{other}, which is in no layer"
            if LAYER[other] > LAYER[top]:
                upward.append(f"{path.relative_to(PKG)}: {top} (layer {LAYER[top]}) imports {other} (layer {LAYER[other]})")
    assert not upward, "\n".join(upward)
