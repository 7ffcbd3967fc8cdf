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


class _WordTokenizer:
    """One token per whitespace word; ids are word lengths (enough for counting positions)."""

    pad_token_id, eos_token_id, bos_token_id = 0, 1, None

    def __call__(self, texts, add_special_tokens=True):
        if isinstance(texts, str):
            return {"input_ids": [len(w) + 2 for w in texts.split()]}
        return {"input_ids": [[len(w) + 2 for w in t.split()] for t in texts]}

    def __len__(self):
        return 100


def test_visibility_records_encoded_length_answer_offset_and_whether_truncation_hid_the_answer():
    from study.evaluate import visibility
    from study.inputs import InputBuilder
    from study.tasks.base import Split

    builder = InputBuilder(_WordTokenizer(), max_length=11, padding_side="right", append_eos=True)
    # 10 text tokens fit (11 minus the appended EOS). Doc a: answer at words 3-4; doc b: at words 12-13 of 20.
    a = "w w w ANSWER HERE w w"
    b = " ".join(["w"] * 12 + ["ANSWER", "HERE"] + ["w"] * 6)
    split = Split(length=None, queries={"qa": "?", "qb": "?", "qc": "?"}, corpus={"a": a, "b": b},
                  qrels={"qa": {"a": 1}, "qb": {"b": 1}, "qc": {"b": 1}},
                  answer_span={"qa": (a.index("ANSWER"), a.index("HERE") + 4),
                               "qb": (b.index("ANSWER"), b.index("HERE") + 4)})
    seen = visibility(builder, split)
    assert seen["qa"] == {"encoded_length": 7, "answer_offset": 3, "answer_visible": True}
    assert seen["qb"] == {"encoded_length": 10, "answer_offset": 12, "answer_visible": False}
    assert seen["qc"] == {"encoded_length": 10, "answer_offset": None, "answer_visible": None}  # no recorded answer


def test_results_rows_of_a_synthetic_task_say_what_the_model_saw(tokenizer):
    """Passkey at 512 tokens encoded with max_length 256: answers past the cut are marked invisible."""
    import torch

    from study.evaluate import evaluate_task
    from study.inputs import InputBuilder
    from study.tasks.synthetic import passkey

    task = passkey([512], num_queries=20, num_docs=20, seed=3)
    builder = InputBuilder(tokenizer, max_length=256, padding_side="right")
    embed = lambda batch: torch.nn.functional.one_hot(batch["input_ids"], len(tokenizer)).float().mean(1)  # noqa: E731
    rows = [r for r in evaluate_task(embed, builder, task, 4096, "32-true", "cpu") if r["query_id"] is not None]
    assert {r["encoded_length"] for r in rows} == {256 - 2}  # <s> ... </s> take two positions
    visible = {r["query_id"]: r["answer_visible"] for r in rows}
    depth = {r["query_id"]: r["depth"] for r in rows}
    assert {visible[q] for q in visible if depth[q] < 0.3} == {True}
    assert {visible[q] for q in visible if depth[q] > 0.7} == {False}
    offsets = {r["query_id"]: r["answer_offset"] for r in rows}
    assert all(offsets[q] < 254 for q in offsets if visible[q])  # a visible answer starts inside the window
