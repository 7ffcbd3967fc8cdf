"""Statistics: cell means with bootstrap intervals, paired bidirectional-minus-causal differences.

Design (why, in short):
- Seeds and queries are *crossed*: every trained model (one per seed) is scored
  on the same evaluation queries (evaluation data has its own seed). A cell is
  therefore a seeds x queries matrix. Intervals come from the two-way bootstrap:
  each resample draws seeds with replacement and, independently, queries with
  replacement, and takes the mean of the resampled matrix. This carries both the
  training-seed variance and the query-sampling variance (it is slightly
  conservative); with one seed it reduces to the ordinary query bootstrap.
- A query is one (task, length, query_id). When a cell spans several lengths or
  tasks, every task gets equal weight and, within a task, every length: LongEmbed's
  score is the mean of its per-length scores, and the paper averages tasks.
- Paired differences: bidirectional and causal runs of the same backbone, pooling
  and seed are scored on the same queries, so the difference matrix
  D[seed, query] = bidirectional - causal is formed first and then bootstrapped
  the same way. The p-value is a two-sided sign-flip permutation test on the
  per-query differences averaged over seeds (the exchangeable unit under "attention
  direction makes no difference" is the query); with a single unit per seed
  (aggregate-only W&B data) the seeds are flipped instead. Exact when the number
  of units is small, Monte Carlo (fixed rng) otherwise.
- Many cells are tested at once: p-values are corrected across the cells of one
  table with Holm (family-wise error, default) or Benjamini-Hochberg (FDR).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from study.errors import ConfigError

CONFIDENCE = 0.95
N_RESAMPLES = 2000
N_PERMUTATIONS = 10000
UNIT = ["task", "length", "query_id"]
GROUP = ["task", "length"]
# The identity of a comparison cell: what is held fixed while the attention direction varies. `encoding`
# (model.encoding: full, echo, chunked) is part of it, so echo-causal is never pooled with full-causal.
CELL = ["backbone", "encoding", "pooling"]


def cell_keys(rows: pd.DataFrame, *extra: str, attention: bool = False) -> list[str]:
    """CELL (the columns `rows` has), optionally with `attention` after the encoding, then `extra`.

    `encoding` is left out when the rows hold one encoding only: grouping by a constant changes no cell, and
    a study of one encoding keeps its tables and figures as before (backbone x attention x pooling)."""
    keys = [k for k in CELL if k in rows.columns
            and (k != "encoding" or rows[k].astype("string").fillna("full").nunique() > 1)]
    if attention:
        keys.insert(len(keys) - 1 if "pooling" in keys else len(keys), "attention")
    return keys + list(extra)


def cell_label(r) -> str:
    """'backbone / pooling', with the encoding in between when it is not `full`."""
    encoding = r.get("encoding") if hasattr(r, "get") else None
    parts = [str(r["backbone"])] + ([str(encoding)] if isinstance(encoding, str) and encoding != "full" else [])
    return " / ".join(parts + [str(r["pooling"])])


def bootstrap_ci(values, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of one sample (scipy.stats.bootstrap)."""
    values = np.asarray(values, dtype=float)
    if values.size < 2 or np.all(values == values[0]):
        return float(values.mean()), float(values.mean())
    res = stats.bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                          method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


@dataclass
class CellMatrix:
    """One cell's scores as a seeds x queries matrix, with per-query weights (summing to 1)."""

    values: np.ndarray  # (seeds, queries)
    seeds: np.ndarray  # seed of each row
    units: np.ndarray  # query code of each column (see with_codes)
    groups: np.ndarray  # (task, length) code of each column
    tasks: np.ndarray  # task code of each column
    weights: np.ndarray  # (queries,)

    def mean(self) -> float:
        return float(self.values.mean(axis=0) @ self.weights)


def with_codes(rows: pd.DataFrame) -> pd.DataFrame:
    """Integer codes for queries (`_unit`) and (task, length) groups (`_group`), added once per table."""
    if "_unit" in rows:
        return rows
    return rows.assign(_unit=rows.groupby(UNIT, dropna=False, sort=True).ngroup().to_numpy(),
                       _group=rows.groupby(GROUP, dropna=False, sort=True).ngroup().to_numpy(),
                       _task=rows.groupby("task", dropna=False, sort=True).ngroup().to_numpy())


def cell_matrix(rows: pd.DataFrame) -> CellMatrix:
    """Per-query rows of one cell -> seeds x queries matrix; queries not seen by every seed are dropped.

    Repeated (seed, query) rows are averaged.
    """
    rows = with_codes(rows)
    seeds, seed_codes = np.unique(rows.seed.to_numpy(dtype="int64", na_value=-1), return_inverse=True)
    units, first, unit_codes = np.unique(rows._unit.to_numpy(), return_index=True, return_inverse=True)
    total = np.zeros((len(seeds), len(units)))
    count = np.zeros_like(total)
    np.add.at(total, (seed_codes, unit_codes), rows.value.to_numpy(dtype=float))
    np.add.at(count, (seed_codes, unit_codes), 1)
    keep = (count > 0).all(axis=0)
    groups = rows._group.to_numpy()[first][keep]
    tasks = rows._task.to_numpy()[first][keep]
    return CellMatrix(total[:, keep] / count[:, keep], seeds, units[keep], groups, tasks,
                      unit_weights(groups, tasks))


def unit_weights(groups: np.ndarray, tasks: np.ndarray | None = None) -> np.ndarray:
    """Weights summing to 1 that give every task equal weight and, within a task, every length group.

    Without `tasks`, every group counts as its own task (equal weight per group)."""
    if len(groups) == 0:
        return np.zeros(0)
    tasks = groups if tasks is None else tasks
    _, g_inverse, g_counts = np.unique(groups, return_inverse=True, return_counts=True)
    task_of_group = {g: t for g, t in zip(groups, tasks)}
    groups_per_task = {t: len({g for g, tt in task_of_group.items() if tt == t}) for t in set(tasks)}
    n_tasks = len(groups_per_task)
    per_task = np.array([groups_per_task[t] for t in tasks], dtype=float)
    return 1.0 / g_counts[g_inverse] / per_task / n_tasks


def two_way_bootstrap(m: CellMatrix, n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Means of `n_resamples` resampled matrices (seeds and queries drawn independently, with replacement)."""
    rng = np.random.default_rng(seed)
    n_seeds, n_units = m.values.shape
    seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=n_resamples)
    unit_counts = rng.multinomial(n_units, np.full(n_units, 1 / n_units), size=n_resamples) * m.weights
    return ((seed_counts @ m.values) * unit_counts).sum(axis=1) / (n_seeds * unit_counts.sum(axis=1))


def percentile_interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Central `confidence` interval of bootstrap samples."""
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(samples, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _groups(rows: pd.DataFrame, by: list[str]):
    """groupby that keeps missing keys (e.g. depth_bucket) and always yields tuples."""
    if not by:
        yield (), rows
        return
    for key, g in rows.groupby(by, dropna=False, sort=True):
        yield (key if isinstance(key, tuple) else (key,)), g


def cell_means(rows: pd.DataFrame, by: list[str], confidence: float = CONFIDENCE,
               n_resamples: int = N_RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """Mean and two-way bootstrap interval of per-query rows, per cell of `by`.

    Columns: by..., mean, ci_low, ci_high, n_seeds, n_queries.
    """
    out = []
    for key, g in _groups(with_codes(rows), by):
        m = cell_matrix(g)
        if m.values.size == 0:
            continue
        lo, hi = percentile_interval(two_way_bootstrap(m, n_resamples, seed), confidence)
        out.append({**dict(zip(by, key)), "mean": m.mean(), "ci_low": lo, "ci_high": hi,
                    "n_seeds": len(m.seeds), "n_queries": len(m.units)})
    return pd.DataFrame(out, columns=by + ["mean", "ci_low", "ci_high", "n_seeds", "n_queries"])


def paired_matrix(rows: pd.DataFrame, a: str = "bidirectional", b: str = "causal",
                  column: str = "attention") -> tuple[CellMatrix, CellMatrix, CellMatrix]:
    """(A, B, A - B) matrices of one cell on the seeds and queries that both sides have."""
    ma, mb = cell_matrix(rows[rows[column] == a]), cell_matrix(rows[rows[column] == b])
    seeds, sa, sb = np.intersect1d(ma.seeds, mb.seeds, return_indices=True)
    units, ua, ub = np.intersect1d(ma.units, mb.units, return_indices=True)
    groups, tasks = ma.groups[ua], ma.tasks[ua]
    weights = unit_weights(groups, tasks)
    va, vb = ma.values[np.ix_(sa, ua)], mb.values[np.ix_(sb, ub)]
    return (CellMatrix(va, seeds, units, groups, tasks, weights), CellMatrix(vb, seeds, units, groups, tasks, weights),
            CellMatrix(va - vb, seeds, units, groups, tasks, weights))


def sign_flip_pvalue(diffs, weights=None, n_permutations: int = N_PERMUTATIONS, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value of a weighted mean difference being 0.

    Exact (all 2^n sign patterns) when that is at most `n_permutations`; otherwise
    Monte Carlo with the +1 correction, so p is never 0.
    """
    d = np.asarray(diffs, dtype=float)
    w = np.full(d.size, 1 / d.size) if weights is None else np.asarray(weights, float) / np.sum(weights)
    if d.size == 0:
        return float("nan")
    observed = abs(d @ w)
    if observed == 0:
        return 1.0
    wd = d * w
    tol = 1e-12 * max(1.0, observed)
    if 2 ** d.size <= n_permutations:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
        return float(np.mean(np.abs(signs @ wd) >= observed - tol))
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_permutations, 2000):  # chunks keep memory small for many queries
        n = min(2000, n_permutations - start)
        signs = rng.choice((-1.0, 1.0), size=(n, d.size))
        hits += int(np.sum(np.abs(signs @ wd) >= observed - tol))
    return float((hits + 1) / (n_permutations + 1))


def paired_test(diff: CellMatrix, n_permutations: int = N_PERMUTATIONS, seed: int = 0) -> float:
    """p-value of one difference matrix: flip queries (seed-averaged), or seeds if there is one query."""
    if diff.values.shape[1] >= 2:
        return sign_flip_pvalue(diff.values.mean(axis=0), diff.weights, n_permutations, seed)
    return sign_flip_pvalue(diff.values[:, 0], None, n_permutations, seed)


def adjust_pvalues(p, method: str = "holm") -> np.ndarray:
    """Multiple-comparison correction across cells: 'holm' (FWER) or 'bh' (Benjamini-Hochberg FDR).

    NaN p-values (untestable cells) stay NaN and do not count as tests.
    """
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if not ok.any():
        return out
    if method == "bh":
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    elif method == "holm":
        q = p[ok]
        order = np.argsort(q)
        m = q.size
        adjusted = np.maximum.accumulate((m - np.arange(m)) * q[order])
        res = np.empty(m)
        res[order] = np.minimum(adjusted, 1.0)
        out[ok] = res
    else:

        raise ConfigError(f"correction={method!r}: valid options are 'holm', 'bh'")
    return out


def paired_differences(rows: pd.DataFrame, by: list[str], alpha: float = 0.05, correction: str = "holm",
                       confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                       n_permutations: int = N_PERMUTATIONS, seed: int = 0) -> pd.DataFrame:
    """Bidirectional minus causal per cell of `by`, on the same seeds and queries.

    Columns: by..., bidirectional, causal, diff, ci_low, ci_high, p_value, p_adjusted,
    significant, n_seeds, n_queries. Cells lacking either side are skipped.
    significant: p_adjusted < alpha AND the interval excludes zero. The permutation test is over queries
    (for these trained models); the two-way interval also carries seed-to-seed variation, so a difference
    that one retrained seed could flip is not called significant.
    """
    cols = by + ["bidirectional", "causal", "diff", "ci_low", "ci_high", "p_value", "p_adjusted",
                 "significant", "n_seeds", "n_queries"]
    out = []
    for key, g in _groups(with_codes(rows), by):
        ma, mb, md = paired_matrix(g)
        if md.values.size == 0:
            continue
        lo, hi = percentile_interval(two_way_bootstrap(md, n_resamples, seed), confidence)
        out.append({**dict(zip(by, key)), "bidirectional": ma.mean(), "causal": mb.mean(), "diff": md.mean(),
                    "ci_low": lo, "ci_high": hi, "p_value": paired_test(md, n_permutations, seed),
                    "n_seeds": len(md.seeds), "n_queries": len(md.units)})
    df = pd.DataFrame(out, columns=cols)
    df["p_adjusted"] = adjust_pvalues(df.p_value.to_numpy(), correction) if len(df) else []
    df["significant"] = (df.p_adjusted < alpha) & ((df.ci_low > 0) | (df.ci_high < 0))
    return df


def long_lengths(lengths) -> list[int]:
    """The 'long documents' of a study: lengths above the median (the longest one if there is one length)."""
    ls = sorted({int(x) for x in pd.Series(lengths).dropna()})
    if not ls:
        return []
    long = [x for x in ls if x > np.median(ls)]
    return long or ls[-1:]


def summary_table(rows: pd.DataFrame, scale: float = 100.0, **kw) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's table: rows backbone x encoding x attention x pooling, columns tasks (mean over lengths) + average.

    Returns (scores, intervals): scores are numbers x `scale` (the paper's points);
    intervals are "[lo, hi]" strings of the same cells. The average gives each task
    (and within it each length) equal weight, as LongEmbed and the paper do.
    """
    keys = cell_keys(rows, attention=True)
    per_task = cell_means(rows, keys + ["task"], **kw)
    overall = cell_means(rows, keys, **kw).assign(task="average")
    both = pd.concat([per_task, overall], ignore_index=True)
    both[["mean", "ci_low", "ci_high"]] *= scale
    order = sorted(per_task.task.unique()) + ["average"]
    scores = both.pivot_table(index=keys, columns="task", values="mean")[order]
    both["interval"] = "[" + both.ci_low.map("{:.1f}".format) + ", " + both.ci_high.map("{:.1f}".format) + "]"
    intervals = both.pivot(index=keys, columns="task", values="interval")[order]
    scores.columns.name = intervals.columns.name = None
    return scores, intervals
