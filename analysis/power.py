"""Power: how precisely a design can measure the primary contrast, and which design to run.

The primary contrast is bidirectional - causal, per backbone and pooling, averaged over the
(task, length) groups of a study with equal weight per group (analysis.stats.unit_weights). A
cell's paired differences form a seeds x queries matrix D (analysis.stats.paired_matrix). We model

    D[s, q] = mu + a_s + b_q + e_sq,   Var(a) = var_seed, Var(b) = var_query, Var(e) = var_resid

(seeds and queries crossed: every trained model answers the same queries), estimate the three
components from a pilot by the method of moments (two-way ANOVA without replication), and predict
the standard error of the weighted mean for a design with S seeds and Q queries per group:

    SE^2 = var_seed / S + (var_query + var_resid / S) * sum_q w_q^2

with sum_q w_q^2 = 1 / (G * Q) for G equally weighted groups of Q queries. The 95% interval is
+-1.96 SE; the minimum detectable difference at 80% power (two-sided 5% test) is 2.80 SE.
`plan` searches seeds x queries for the cheapest design whose worst cell meets a half-width target,
with a cost model (seconds per trial) measured on the pilot: this sizes the default study.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis.stats import paired_matrix, with_codes

Z95 = float(sps.norm.ppf(0.975))
Z80 = float(sps.norm.ppf(0.80))


@dataclass(frozen=True)
class Components:
    """Variance components of one cell's paired differences (score units squared)."""

    var_seed: float
    var_query: float
    var_resid: float
    n_seeds: int
    n_queries: int

    def se(self, seeds: int, queries_per_group: int, groups: int) -> float:
        unit = (self.var_query + self.var_resid / seeds) / (groups * queries_per_group)
        return float(np.sqrt(self.var_seed / seeds + unit))


def components(diff: np.ndarray) -> Components:
    """Method-of-moments variance components of a seeds x queries matrix (negative estimates -> 0).

    With one seed the seed and residual components cannot be told apart: the query component then
    holds both, and var_seed is 0 (a single-seed pilot underestimates seed-to-seed variation)."""
    d = np.asarray(diff, dtype=float)
    s, q = d.shape
    if q < 2:
        return Components(float(np.var(d.mean(axis=1), ddof=1)) if s > 1 else 0.0, 0.0, 0.0, s, q)
    if s == 1:
        return Components(0.0, float(np.var(d[0], ddof=1)), 0.0, 1, q)
    grand = d.mean()
    ms_seed = q * np.sum((d.mean(axis=1) - grand) ** 2) / (s - 1)
    ms_query = s * np.sum((d.mean(axis=0) - grand) ** 2) / (q - 1)
    resid = d - d.mean(axis=1, keepdims=True) - d.mean(axis=0, keepdims=True) + grand
    ms_resid = np.sum(resid**2) / ((s - 1) * (q - 1))
    return Components(max(0.0, (ms_seed - ms_resid) / q), max(0.0, (ms_query - ms_resid) / s), float(ms_resid), s, q)


def cell_components(rows: pd.DataFrame, by: tuple[str, ...] = ("backbone", "pooling")) -> pd.DataFrame:
    """Variance components of bidirectional - causal per cell of `by` (per-query rows of one metric).

    Differences are centred per (task, length) group first, so a group's mean shift is not counted
    as query-to-query variance."""
    out = []
    rows = with_codes(rows)
    for key, g in rows.groupby(list(by), dropna=False, sort=True):
        _, _, md = paired_matrix(g)
        if md.values.size == 0:
            continue
        centred = md.values.copy()
        for grp in np.unique(md.groups):
            cols = md.groups == grp
            centred[:, cols] -= centred[:, cols].mean()
        c = components(centred)
        key = key if isinstance(key, tuple) else (key,)
        out.append({**dict(zip(by, key)), "diff": md.mean(), "var_seed": c.var_seed, "var_query": c.var_query,
                    "var_resid": c.var_resid, "n_seeds": c.n_seeds, "n_queries": c.n_queries,
                    "groups": len(np.unique(md.groups))})
    return pd.DataFrame(out)


def half_width(comp: pd.DataFrame, seeds: int, queries_per_group: int, groups: int) -> pd.Series:
    """Predicted 95% half-width of each cell's contrast under a design (score units)."""
    return comp.apply(lambda r: Z95 * Components(r.var_seed, r.var_query, r.var_resid, 0, 0).se(
        seeds, queries_per_group, groups), axis=1)


def detectable(se: float) -> float:
    """Smallest true difference found with 80% power by a two-sided 5% test."""
    return (Z95 + Z80) * se


@dataclass(frozen=True)
class Design:
    seeds: int
    queries_per_group: int
    worst_half_width: float
    minutes: float


def plan(comp: pd.DataFrame, groups: int, cells_per_seed: int, seconds_per_trial, target: float = 0.05,
         budget_minutes: float | None = None, seeds=(1, 2, 3, 4, 5),
         queries=(20, 30, 40, 50, 60, 80, 100, 150, 200)) -> tuple[Design | None, pd.DataFrame]:
    """The cheapest (seeds, queries per group) whose worst cell's 95% half-width is <= `target`.

    seconds_per_trial(queries_per_group) -> float: the measured cost model of one trial.
    Returns (the chosen design or None if no design meets the target within the budget, every design tried).
    """
    rows = []
    for s in seeds:
        for q in queries:
            hw = float(half_width(comp, s, q, groups).max()) if len(comp) else float("nan")
            minutes = s * cells_per_seed * seconds_per_trial(q) / 60
            rows.append(Design(s, q, hw, minutes))
    table = pd.DataFrame([d.__dict__ for d in rows])
    ok = table[(table.worst_half_width <= target) & (table.minutes <= (budget_minutes or np.inf))]
    if ok.empty:
        return None, table
    best = ok.sort_values(["minutes", "worst_half_width"]).iloc[0]
    return Design(int(best.seeds), int(best.queries_per_group), float(best.worst_half_width),
                  float(best.minutes)), table
