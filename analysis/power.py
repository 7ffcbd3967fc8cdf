"""Power: how precisely a design can measure the primary contrast, and which design to run.

The primary contrast is bidirectional - causal, per backbone and pooling, averaged over the
(task, length) groups of a study with equal weight per group (analysis.stats.unit_weights). A
cell's paired differences form a seeds x queries matrix D (analysis.stats.paired_matrix). We model

    D[s, q] = mu + a_s + b_q + e_sq,   Var(a) = var_seed, Var(b) = var_query, Var(e) = var_resid

(seeds and queries crossed: every trained model answers the same queries), estimate the three
components from a pilot by the method of moments (two-way ANOVA without replication), and predict
the standard error of the weighted mean for a design with S seeds:

    SE^2 = var_seed / S + (var_query + var_resid / S) * sum_q w_q^2

where w_q are the query weights of analysis.stats (every task equal, every length within a task
equal). sum_q w_q^2 scales as 1/Q when every (task, length) group grows to Q queries, so a pilot's
sum, times Q_pilot / Q, predicts any design. The 95% interval is +-1.96 SE; the minimum detectable
difference at 80% power (two-sided 5% test) is 2.80 SE.
`plan` searches seeds x queries for the cheapest design whose worst cell meets a half-width target,
with a cost model (seconds per trial) measured on the pilot: this sizes the default study.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis.load import evaluation_units, load_local, study_paths
from analysis.references import split_references
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

    def se(self, seeds: int, sum_sq_weights: float) -> float:
        """Standard error of the weighted mean over a seeds x queries design with these query weights."""
        return float(np.sqrt(self.var_seed / seeds + (self.var_query + self.var_resid / seeds) * sum_sq_weights))


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
        per_group = np.unique(md.groups, return_counts=True)[1]
        out.append({**dict(zip(by, key)), "diff": md.mean(), "var_seed": c.var_seed, "var_query": c.var_query,
                    "var_resid": c.var_resid, "n_seeds": c.n_seeds, "n_queries": c.n_queries,
                    "sum_sq_weights": float(np.sum(md.weights ** 2)), "queries_per_group": float(np.median(per_group))})
    return pd.DataFrame(out)


def half_width(comp: pd.DataFrame, seeds: int, queries_per_group: float | None = None) -> pd.Series:
    """Predicted 95% half-width of each cell's contrast with `seeds` seeds and `queries_per_group` queries
    in every (task, length) group (None: the pilot's own), in score units."""
    def one(r):
        scale = 1.0 if queries_per_group is None else r.queries_per_group / queries_per_group
        return Z95 * Components(r.var_seed, r.var_query, r.var_resid, 0, 0).se(seeds, r.sum_sq_weights * scale)

    return comp.apply(one, axis=1)


def detectable(se: float) -> float:
    """Smallest true difference found with 80% power by a two-sided 5% test."""
    return (Z95 + Z80) * se


@dataclass(frozen=True)
class Design:
    seeds: int
    queries_per_group: int
    worst_half_width: float
    minutes: float


def trial_cost(train_seconds: float, eval_seconds: float, pilot_queries: int, overhead: float = 1.0):
    """Cost model measured on a pilot: seconds per trial when every length holds `q` queries (and documents).

    Training does not depend on the evaluation size; encoding grows with the documents per length, which
    the default study sets equal to its queries."""
    return lambda q: train_seconds + overhead + eval_seconds * q / pilot_queries


def plan(comp: pd.DataFrame, cells_per_seed: int, seconds_per_trial, target: float = 0.05,
         budget_minutes: float | None = None, seeds=tuple(range(1, 13)),
         queries=(20, 30, 40, 50, 60, 80, 100, 150, 200)) -> tuple[Design | None, pd.DataFrame]:
    """The cheapest (seeds, queries per group) whose worst cell's 95% half-width is <= `target`.

    seconds_per_trial(queries_per_group) -> float: the measured cost model of one trial.
    Returns (the chosen design or None if no design meets the target within the budget, every design tried).
    """
    rows = []
    for s in seeds:
        for q in queries:
            hw = float(half_width(comp, s, q).max()) if len(comp) else float("nan")
            minutes = s * cells_per_seed * seconds_per_trial(q) / 60
            rows.append(Design(s, q, hw, minutes))
    table = pd.DataFrame([d.__dict__ for d in rows])
    ok = table[(table.worst_half_width <= target) & (table.minutes <= (budget_minutes or np.inf))]
    if ok.empty:
        return None, table
    best = ok.sort_values(["minutes", "worst_half_width"]).iloc[0]
    return Design(int(best.seeds), int(best.queries_per_group), float(best.worst_half_width),
                  float(best.minutes)), table


def pilot_report(study: str, runs_dir: str = "runs", metric: str = "mrr_at_10", target: float = 0.05,
                 budget_minutes: float | None = None) -> tuple[Design | None, pd.DataFrame, pd.DataFrame, dict]:
    """Size a study from its pilot (`study power NAME`): (design, designs tried, components, cost facts).

    Reads runs/<study>/results.parquet (per-query rows) and the trials' measured times from its Optuna
    storage; the design space is seeds x queries per (task, length) group, with the pilot's cells."""
    import optuna


    table, storage = study_paths(study, runs_dir)
    rows, _ = split_references(evaluation_units(load_local(table, companions=False), metric))
    comp = cell_components(rows)
    groups = int(rows.groupby(["task", "length"], dropna=False).ngroups)
    queries = int(rows.groupby(["task", "length"], dropna=False).query_id.nunique().median())
    cells = int(rows[[k for k in ("backbone", "encoding", "attention", "pooling") if k in rows]].drop_duplicates().shape[0])
    trials = [t for t in optuna.load_study(study_name=study, storage=f"sqlite:///{storage}").trials
              if t.state == optuna.trial.TrialState.COMPLETE] if storage else []
    facts = {"groups": groups, "pilot_queries_per_group": queries, "cells_per_seed": cells,
             "pilot_seeds": int(rows.seed.nunique()),
             "train_seconds": float(np.median([t.user_attrs["train_seconds"] for t in trials])) if trials else 60.0,
             "eval_seconds": float(np.median([t.user_attrs["eval_seconds"] for t in trials])) if trials else 30.0}
    cost = trial_cost(facts["train_seconds"], facts["eval_seconds"], queries)
    design, designs = plan(comp, cells, cost, target, budget_minutes)
    return design, designs, comp, facts


def detectable_by_cell(comp: pd.DataFrame, by: tuple[str, ...] = ("backbone", "pooling")) -> dict:
    """{cell key: smallest difference this study's own design detects with 80% power} (score units)."""
    out = {}
    for _, r in comp.iterrows():
        se = Components(r.var_seed, r.var_query, r.var_resid, 0, 0).se(int(r.n_seeds), r.sum_sq_weights)
        out[tuple(r[k] for k in by)] = detectable(se)
    return out
