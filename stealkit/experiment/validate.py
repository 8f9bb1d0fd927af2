"""Every mistake in a config found before any work: each row's attack, defence and surrogate, the probe,
the verify block, the downstream sets' names and the victims' checkpoints, checked when the config is
loaded (a typo in the last row's defence fails in the first second, not after pre-training the victim).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from stealkit.userinput import UserError, describe_with_fields


def arch_problem(name) -> str | None:
    from stealkit.models.architectures import arch_problem as problem  # torchvision: imported when a config is checked

    return problem(name)


def _attack_problem(row) -> tuple[str | None, object]:
    from stealkit.attacks.base import attack_class

    try:
        cls = attack_class(row.attack["name"])
        conf = cls.with_victim(dict(row.attack.get("config") or {}), row.victim, row.seed)
        return None, cls(conf)
    except ValidationError as exc:
        return f"attack {row.attack['name']!r}: {describe_with_fields(exc, cls.Config, 'config')}", None
    except UserError as exc:
        return str(exc), None


def _defence_problem(spec: dict | None) -> str | None:
    from stealkit.defences.base import validate_defence

    if not spec:
        return None
    spec = dict(spec)
    shadow = spec.get("shadow")
    if isinstance(shadow, dict):  # a training spec: check it, and the defence with a stand-in path
        from stealkit.attacks.steal_config import StealConfig
        from stealkit.experiment.shadows import shadow_problem

        problem = shadow_problem(shadow)
        arch = (shadow.get("config") or {}).get("arch")
        if not problem and arch is not None and (wrong := arch_problem(arch)):
            problem = f"shadow config.arch: {wrong}"
        if problem:
            return f"defence {spec.get('name')!r}: {problem}"
        try:
            StealConfig(**(shadow.get("config") or {}))
        except ValidationError as exc:
            return f"defence {spec.get('name')!r}: shadow {describe_with_fields(exc, StealConfig, 'config')}"
        spec["shadow"] = "<shadow checkpoint>"
    try:
        validate_defence(spec)
    except UserError as exc:
        return str(exc)
    return None


def _batch_size(attack) -> int | None:
    return getattr(getattr(attack, "config", None), "batch_size", None)


def validate_config(cfg, check_files: bool = False) -> None:
    """Raise a UserError listing every problem of `cfg` (an ExperimentConfig); return None when it is sound.
    check_files: also that every victim checkpoint exists (at the start of a run; configs may name
    checkpoints a script makes first)."""
    from stealkit.data.registry import DATASETS
    from stealkit.probes.evaluate import validate_probe

    row_problems: dict[tuple[str, str], list[int]] = {}  # (row label, problem) -> row numbers: seeds share a problem
    rows = cfg.rows()
    seen_defences: dict[str, str | None] = {}
    for i, row in enumerate(rows):
        found = []
        arch = (row.attack.get("config") or {}).get("arch")
        problem, attack = _attack_problem(row)
        if arch is not None and (wrong := arch_problem(arch)):  # before the attack's own check: the closest name is the help
            problem = f"attack.config.arch: {wrong}"
        if problem:
            found.append(problem)
        key = repr(row.defence)
        if key not in seen_defences:
            seen_defences[key] = _defence_problem(row.defence)
        if seen_defences[key]:
            found.append(seen_defences[key])
        limit, batch = row.surrogate.get("limit"), _batch_size(attack)
        if limit is not None and batch is not None and limit < batch:
            found.append(f"surrogate.limit={limit} is smaller than one batch ({batch}); nothing would be "
                         f"trained after paying for {limit} queries — use at least {batch} images or a smaller batch_size")
        for p in found:
            row_problems.setdefault((row.label(), p), []).append(i + 1)
    problems = [f"{'row' if len(nums) == 1 else 'rows'} {', '.join(map(str, nums))} ({label}): {p}"
                for (label, p), nums in row_problems.items()]
    for v in cfg.victim_list():
        if v.pretrain is not None and (wrong := arch_problem(v.pretrain.arch)):
            name = f"victim {v.label!r}" if v.label else "victim"
            problems.append(f"{name}: pretrain.arch: {wrong}")
    for v in cfg.victim_list() if check_files else []:
        if v.checkpoint:
            from stealkit.models.checkpoint import _paths

            weights, sidecar = _paths(v.checkpoint)
            if not (weights.exists() and sidecar.exists()):
                hint = " (turn a provider's weights into one with: stealkit import ...)" if not sidecar.exists() else ""
                problems.append(f"victim checkpoint {v.checkpoint} not found: need {weights.name} and {sidecar.name}{hint}")
    for ds in cfg.downstream:
        if ds.name not in DATASETS and not ds.name.startswith(("folder:", "archive:")):
            import difflib

            close = difflib.get_close_matches(ds.name, DATASETS, n=1)
            problems.append(f"downstream {ds.name!r}: unknown dataset{f' (did you mean {close[0]!r}?)' if close else ''}; "
                            f"known: {', '.join(DATASETS)} (or folder:/path, archive:/path.tar.gz)")
    try:
        validate_probe(cfg.probe.kind, cfg.probe.config)
    except (UserError, ValueError, TypeError) as exc:
        problems.append(f"probe: {exc}")
    if cfg.verify:
        from stealkit.experiment.verification import parse_verify

        try:
            parse_verify(cfg.verify)
        except ValueError as exc:
            problems.append(" ".join(str(exc).split()))
    if problems:
        shown = problems[:8] + ([f"... and {len(problems) - 8} more"] if len(problems) > 8 else [])
        raise UserError("\n".join(shown))


def config_path_hint(path: str | Path) -> str:
    return f"see {Path(path)} and docs/defaults.md"
