"""Reading a defence trade-off: honest users' accuracy (TA-honest) against the thief's (SA), per defence setting.

- `pareto_front`: the settings no other setting beats on both axes (higher TA-honest, lower SA).
- `queries_to_reach`: how many queries a thief needs under a defence to reach a target SA (the undefended SA
  at some budget), by linear interpolation between the measured budgets: the cost framing of B4B
  (Dubiński et al., NeurIPS 2023, arXiv:2310.08571) and of the Dziedzic et al. blog on stealing encoders.
- `goal_check`: issue "A defence that spares honest users"'s bar: honest users lose at most `max_ta_loss`
  points of TA, and the strongest thief gains at most `max_sa_gain` points of SA over the no-query baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """(TA-honest, SA) pairs -> indices of the non-dominated ones, by increasing SA. A point is dominated when
    another has TA-honest ≥ and SA ≤ with one of them strict; equal points are all kept."""
    out = []
    for i, (ta, sa) in enumerate(points):
        dominated = any((t >= ta and s <= sa) and (t > ta or s < sa) for j, (t, s) in enumerate(points) if j != i)
        if not dominated:
            out.append(i)
    return sorted(out, key=lambda i: (points[i][1], -points[i][0]))


def queries_to_reach(sa_by_queries: Mapping[int, float], target: float) -> tuple[float | None, str]:
    """{budget: SA} and a target SA -> (queries, how): "measured" when a budget reaches it exactly or the
    smallest budget already does (then the queries are that budget, an upper bound: "at most"), "interpolated"
    between the two budgets around it, or (None, "not reached") when no measured budget reaches it."""
    budgets = sorted(sa_by_queries)
    if not budgets:
        raise ValueError("queries_to_reach needs at least one measured budget")
    if sa_by_queries[budgets[0]] >= target:
        return float(budgets[0]), "at most"
    for lo, hi in zip(budgets, budgets[1:]):
        s_lo, s_hi = sa_by_queries[lo], sa_by_queries[hi]
        if s_hi >= target:
            if s_hi == target:
                return float(hi), "measured"
            return lo + (target - s_lo) / (s_hi - s_lo) * (hi - lo), "interpolated"
    return None, "not reached"


def goal_check(ta_honest: float, ta_undefended: float, sa_worst: float, sa_baseline: float,
               max_ta_loss: float = 1.0, max_sa_gain: float = 10.0) -> dict:
    """Accuracies in percent -> {"ta_loss", "sa_gain", "met", "ta_gap", "sa_gap"}: the gaps are how many
    points each side is beyond its bar (0 when within it)."""
    ta_loss = ta_undefended - ta_honest
    sa_gain = sa_worst - sa_baseline
    return {"ta_loss": ta_loss, "sa_gain": sa_gain, "met": ta_loss <= max_ta_loss and sa_gain <= max_sa_gain,
            "ta_gap": max(0.0, ta_loss - max_ta_loss), "sa_gap": max(0.0, sa_gain - max_sa_gain)}
