"""Reference lines that a score is read against: chance, BM25 on the same documents, the truncation ceiling.

- chance: the expected score of a random ranking of a query's candidate pool (`candidates` column of the
  results table), per metric, for one relevant document;
- BM25: reference rows (backbone "bm25", no attention) that the default study evaluates on the very same
  documents and queries (study eval bm25 with the sweep's eval settings);
- truncation ceiling: per model, task and length, the share of queries whose answer lies inside the tokens
  the model actually encoded (`answer_visible`): no model can find an answer it never read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

REFERENCE_BACKBONES = ("bm25",)


def chance(metric: str, candidates: int) -> float:
    """Expected score of a uniformly random ranking of `candidates` documents, one of them relevant."""
    n = int(candidates)
    if n < 1:
        return float("nan")
    ranks = np.arange(1, n + 1)
    if metric in ("ndcg_at_1", "recall_at_1"):
        return 1.0 / n
    if metric == "mrr_at_10":
        return float(np.sum(1.0 / ranks[:10]) / n)
    if metric == "ndcg_at_10":
        return float(np.sum(1.0 / np.log2(ranks[:10] + 1)) / n)
    if metric == "recall_at_10":
        return min(10, n) / n
    raise ValueError(f"no chance level for metric {metric!r}")


def split_references(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(model rows, reference rows): references are BM25 and other rows without an attention direction."""
    ref = rows.backbone.isin(REFERENCE_BACKBONES) | rows.attention.isna()
    return rows[~ref], rows[ref]


def chance_by_length(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Chance level per (task, length), from the candidate pools the queries were ranked against."""
    known = rows[rows.candidates.notna()]
    pools = known.groupby(["task", "length"], dropna=False).candidates.median().reset_index()
    pools["chance"] = [chance(metric, n) for n in pools.candidates]
    return pools


def reference_by_length(references: pd.DataFrame) -> pd.DataFrame:
    """Mean score of each reference (BM25) per (task, length): `backbone`, task, length, mean."""
    if references.empty:
        return pd.DataFrame(columns=["backbone", "task", "length", "mean"])
    return references.groupby(["backbone", "task", "length"], dropna=False).value.mean().rename("mean").reset_index()


def ceiling_by_length(rows: pd.DataFrame) -> pd.DataFrame:
    """Truncation ceiling per (backbone, task, length): share of queries whose answer the model encoded.

    Only queries whose task records where the answer is count; a (task, length) without any is left out."""
    known = rows[rows.answer_visible.notna()].drop_duplicates(["backbone", "task", "length", "query_id"])
    if known.empty:
        return pd.DataFrame(columns=["backbone", "task", "length", "ceiling", "encoded_length"])
    return (known.assign(visible=known.answer_visible.astype(float))
            .groupby(["backbone", "task", "length"], dropna=False)
            .agg(ceiling=("visible", "mean"), encoded_length=("encoded_length", "max")).reset_index())


def visibility_split(rows: pd.DataFrame) -> pd.DataFrame:
    """Per-query rows labelled 'answer visible' / 'answer truncated' (queries with a known answer position)."""
    known = rows[rows.answer_visible.notna()]
    return known.assign(answer=np.where(known.answer_visible.astype(bool), "visible", "truncated"))
