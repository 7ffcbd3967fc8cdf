"""Task registry, BEIR / LongEmbed / mteb loaders on local fixtures, scoring with known relevance, BM25."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from study.config import load_config
from study.errors import ConfigError
from study.tasks import build_task, check_task_names, parse_task_name
from study.tasks.base import TaskUnavailable, length_bucket

FIXTURES = Path(__file__).parent / "fixtures"
BEIR = FIXTURES / "beir_tiny"
LONGEMBED = FIXTURES / "longembed"


# ------------------------------------------------------------------ names


def test_names_parse_and_bad_names_are_refused_with_the_valid_options():
    assert parse_task_name("passkey") == ("passkey", "")
    assert parse_task_name("pydocs") == ("pydocs", "")
    assert parse_task_name("beir:/data/x") == ("beir", "/data/x")
    assert parse_task_name("longembed:qmsum") == ("longembed", "qmsum")
    assert parse_task_name("mteb:LEMBNeedleRetrieval") == ("mteb", "LEMBNeedleRetrieval")
    with pytest.raises(ConfigError, match="unknown task 'pydoc'.*Did you mean 'pydocs'.*beir:<path>"):
        check_task_names(["pydoc"])
    with pytest.raises(ConfigError, match="needs an argument"):
        check_task_names(["beir:"])
    with pytest.raises(ConfigError, match="does not exist"):
        check_task_names(["beir:/no/such/folder"])
    with pytest.raises(ConfigError, match="missing corpus.jsonl"):
        check_task_names([f"beir:{LONGEMBED}"])
    with pytest.raises(ConfigError, match="unknown LongEmbed config 'qmsumm'.*narrativeqa, qmsum"):
        check_task_names(["longembed:qmsumm"])
    with pytest.raises(ConfigError, match="twice"):
        check_task_names(["passkey", "passkey"])
    check_task_names(["passkey", "needle", "pydocs", "pydocs-index", f"beir:{BEIR}", f"longembed:{LONGEMBED / 'qmsum'}"])


def test_config_validation_refuses_unknown_tasks_before_any_compute():
    with pytest.raises(ConfigError, match="eval.tasks: unknown task 'nope'"):
        load_config(overrides=["eval.tasks=[passkey,nope]"])
    cfg = load_config(overrides=[f"eval.tasks=[beir:{BEIR},needle]"])
    assert list(cfg.eval.tasks) == [f"beir:{BEIR}", "needle"]


# ------------------------------------------------------------------ BEIR


def test_beir_folder_loads_with_titles_grades_depths_and_length_buckets():
    task = build_task(f"beir:{BEIR}", None)
    assert task.name == "beir:beir_tiny"
    (split,) = task.splits
    # q4's only relevant document is not in the corpus: dropped, not scored as a free zero.
    assert sorted(split.queries) == ["q1", "q2", "q3"]
    assert split.qrels["q1"] == {"d1": 2, "d2": 1} and split.qrels["q3"] == {"d5": 1, "d4": 0}
    assert split.corpus["d1"].startswith("Lighthouses\n\nA lighthouse keeper")
    assert split.depth == {"q2": 0.25}
    assert split.length is None and split.query_length == {"q1": 256, "q2": 256, "q3": 256}


def test_length_buckets_follow_the_synthetic_tasks_unit():
    # bucket L holds 0.375 L < words <= 0.75 L
    assert length_bucket(10) == 256 and length_bucket(192) == 256 and length_bucket(193) == 512
    assert length_bucket(768) == 1024 and length_bucket(769) == 2048 and length_bucket(24_000) == 32768


def _ndcg(gains_by_rank: list[float], ideal: list[float], k: int) -> float:
    dcg = sum(g / math.log2(r + 2) for r, g in enumerate(gains_by_rank[:k]))
    idcg = sum(g / math.log2(r + 2) for r, g in enumerate(sorted(ideal, reverse=True)[:k]))
    return dcg / idcg


def test_perfect_and_reversed_rankings_score_what_the_formulas_say():
    from study.evaluate import score_matrix

    (split,) = build_task(f"beir:{BEIR}", None).splits
    qids, dids = ["q1"], sorted(split.corpus)  # d1..d6
    qrels = {"q1": split.qrels["q1"]}
    perfect = np.array([[6, 5, 4, 3, 2, 1]], dtype=float)  # d1 (grade 2) first, then d2 (grade 1)
    scores = {m: v for _, m, v in score_matrix(perfect, qids, dids, qrels)}
    assert scores == {"ndcg_at_1": 1.0, "ndcg_at_10": 1.0, "mrr_at_10": 1.0, "recall_at_1": 0.5, "recall_at_10": 1.0}
    reversed_ = -perfect  # d6 ... d1: d2 at rank 5, d1 at rank 6
    scores = {m: v for _, m, v in score_matrix(reversed_, qids, dids, qrels)}
    gains = [{"d1": 2, "d2": 1}.get(d, 0) for d in reversed(dids)]
    assert scores["ndcg_at_10"] == pytest.approx(_ndcg(gains, [2, 1], 10))
    assert scores["mrr_at_10"] == pytest.approx(1 / 5)
    assert scores["ndcg_at_1"] == 0.0 and scores["recall_at_1"] == 0.0 and scores["recall_at_10"] == 1.0


def test_bm25_rows_on_a_lexical_fixture():
    from study.bm25 import evaluate_bm25

    task = build_task(f"beir:{BEIR}", None)
    rows = evaluate_bm25(task)
    per_query = {(r["query_id"], r["metric"]): r["value"] for r in rows if r["query_id"] is not None}
    # Each fixture query shares its content words only with its relevant documents.
    assert per_query[("q1", "ndcg_at_10")] == pytest.approx(1.0)
    assert per_query[("q2", "ndcg_at_1")] == 1.0 and per_query[("q3", "mrr_at_10")] == 1.0
    assert per_query[("q2", "recall_at_1")] == 1.0
    task_rows = [r for r in rows if r["query_id"] is None and r["length"] is None]
    assert {r["metric"] for r in task_rows} == {"ndcg_at_1", "ndcg_at_10", "mrr_at_10", "recall_at_1", "recall_at_10"}
    depth_rows = [r for r in rows if r["query_id"] is None and r["depth_bucket"] is not None]
    # Only q2 has a depth: its bucket's rows hold q2's scores alone.
    assert {r["depth_bucket"] for r in depth_rows} == {"0.2-0.4"}


def test_aggregates_of_a_real_task_mean_over_queries_and_depth_rows_exclude_depthless_queries():
    from study.evaluate import aggregate

    rows = [dict(task="t", length=256, depth=None, depth_bucket=None, query_id="a", metric="ndcg_at_1", value=1.0),
            dict(task="t", length=256, depth=0.1, depth_bucket="0.0-0.2", query_id="b", metric="ndcg_at_1", value=0.0),
            dict(task="t", length=1024, depth=None, depth_bucket=None, query_id="c", metric="ndcg_at_1", value=1.0)]
    out = aggregate(rows)
    per_length = {r["length"]: r["value"] for r in out if r["depth_bucket"] is None and r["length"] is not None}
    assert per_length == {256: 0.5, 1024: 1.0}
    assert [r["value"] for r in out if r["depth_bucket"] is not None] == [0.0]
    assert [r["value"] for r in out if r["length"] is None] == [pytest.approx(2 / 3)]


# ------------------------------------------------------------------ LongEmbed and mteb


def test_longembed_local_folders_load_in_the_hub_layout(tmp_path):
    passkey = build_task(f"longembed:{LONGEMBED / 'passkey'}", None)
    assert passkey.name == "longembed:passkey"
    assert [s.length for s in passkey.splits] == [256, 512]
    for s in passkey.splits:
        assert len(s.queries) == 3 and len(s.corpus) == 3 and not s.query_length
        assert all(s.qrels[q] == {q.replace("query", "doc"): 1} for q in s.queries)
    qmsum = build_task(f"longembed:{LONGEMBED / 'qmsum'}", None)
    (split,) = qmsum.splits
    assert split.length is None and split.query_length == {"query_0": 256, "query_1": 256}
    assert len(split.corpus) == 3

    # The same data saved with datasets' save_to_disk loads too.
    import datasets
    import pandas as pd

    dd = datasets.DatasetDict({s: datasets.Dataset.from_pandas(pd.read_json(LONGEMBED / "qmsum" / f"{s}.jsonl", lines=True))
                               for s in ("corpus", "queries", "qrels")})
    dd.save_to_disk(str(tmp_path / "qmsum"))
    again = build_task(f"longembed:{tmp_path / 'qmsum'}", None)
    assert again.splits[0].qrels == split.qrels and again.splits[0].corpus == split.corpus


def test_hub_tasks_offline_fail_with_what_to_download_where(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(TaskUnavailable) as e:
        build_task("longembed:qmsum", None)
    msg = str(e.value)
    assert "dwzhu/LongEmbed" in msg and "HF_HOME" in msg and "longembed:DIR/<config>" in msg


def test_mteb_retrieval_tasks_become_splits():
    pytest.importorskip("mteb")
    from mteb.mocks.mock_tasks.retrieval import MockRetrievalTask

    from study.tasks.hub import from_mteb_task

    task = from_mteb_task(MockRetrievalTask())
    assert task.name == "mteb:MockRetrievalTask"
    # Two eval splits (val, test): query ids are prefixed so they stay unique in the results table.
    assert len(task.splits) == 2
    qids = [q for s in task.splits for q in s.queries]
    assert len(set(qids)) == len(qids) == 4 and all("/" in q for q in qids)
    for s in task.splits:
        assert all(any(g > 0 for g in rel.values()) for rel in s.qrels.values())
        assert all(d in s.corpus for rel in s.qrels.values() for d in rel)
