"""Ranking and scoring: library metrics on rankings with known answers; token-budget batching."""

import math

import numpy as np
import pytest

from study.encode import length_batches
from study.evaluate import aggregate, bucket_label, score_split


def test_scores_of_known_rankings():
    # Query a's relevant doc ranks 1st, query b's ranks 3rd of 3.
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    d = np.array([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6]])
    rows = {(qid, m): v for qid, m, v in score_split(q, d, ["a", "b"], ["d0", "d1", "d2"],
                                                     {"a": {"d0": 1}, "b": {"d0": 1}})}
    assert rows[("a", "ndcg_at_1")] == 1.0 and rows[("a", "mrr_at_10")] == 1.0
    assert rows[("b", "ndcg_at_1")] == 0.0
    assert rows[("b", "mrr_at_10")] == pytest.approx(1 / 3)
    assert rows[("b", "ndcg_at_10")] == pytest.approx(1 / math.log2(4))
    assert rows[("b", "recall_at_10")] == 1.0 and rows[("b", "recall_at_1")] == 0.0


def test_queries_with_no_hit_get_zero_rows():
    q, d = np.eye(2), np.eye(2)
    rows = score_split(q, d, ["a", "b"], ["x", "y"], {"a": {"x": 1}, "b": {"z": 1}})
    values = {(qid, m): v for qid, m, v in rows}
    assert values[("b", "ndcg_at_10")] == 0.0 and len(rows) == 2 * 5


def test_aggregates_are_means_per_length_bucket_and_task():
    rows = [dict(task="t", length=L, depth=dep, depth_bucket=bucket_label(dep, 2), query_id=f"{L}{i}",
                 metric="ndcg_at_1", value=v)
            for L, vals in [(256, [1, 0, 1, 1]), (512, [0, 0, 1, 0])]
            for i, (dep, v) in enumerate(zip([0.1, 0.2, 0.7, 0.9], vals))]
    agg = aggregate(rows)
    by = {(r["length"], r["depth_bucket"]): r["value"] for r in agg}
    assert by[(256, None)] == 0.75 and by[(512, None)] == 0.25
    assert by[(256, "0.0-0.5")] == 0.5 and by[(256, "0.5-1.0")] == 1.0
    assert by[(None, None)] == 0.5  # task score: mean over lengths


def test_length_batches_respect_the_token_budget_and_cover_every_row():
    lengths = [5, 100, 30, 100, 7, 64, 1]
    batches = length_batches(lengths, batch_tokens=200)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 200 or len(b) == 1
    assert lengths[batches[0][0]] == 100  # longest first: an out-of-memory shows at once
