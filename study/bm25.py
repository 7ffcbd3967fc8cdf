"""BM25 (the bm25s library): the lexical reference row of every retrieval table.

Scored exactly like an embedding model (study.evaluate.score_matrix on a
[queries x documents] score matrix, same metrics, same rows), so its rows sit
next to the models' in the results table with backbone="bm25" and no attention
or pooling. BM25 reads whole documents (no truncation), lower-cased, English
stop words removed, no stemming; k1=1.5, b=0.75 (Lucene's defaults).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from study.evaluate import aggregate, score_matrix, split_rows
from study.tasks.base import RetrievalTask

log = logging.getLogger(__name__)

NAME = "bm25"
K1, B = 1.5, 0.75


def bm25_scores(queries: list[str], corpus: list[str], k1: float = K1, b: float = B) -> np.ndarray:
    """[queries x documents] BM25 scores."""
    import bm25s

    retriever = bm25s.BM25(k1=k1, b=b)
    retriever.index(bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False)
    scores = np.zeros((len(queries), len(corpus)), dtype=np.float32)
    for i, q in enumerate(queries):
        tokens = bm25s.tokenize([q], stopwords="en", show_progress=False, return_ids=False)[0]
        if tokens:
            scores[i] = retriever.get_scores(tokens)
    return scores


def evaluate_bm25(task: RetrievalTask, depth_buckets: int = 5) -> list[dict]:
    """Result rows (per query + aggregates) for one task, the same shape as study.evaluate.evaluate_task."""
    rows = []
    for split in task.splits:
        t0 = time.perf_counter()
        qids, dids = list(split.queries), list(split.corpus)
        scores = bm25_scores([split.queries[q] for q in qids], [split.corpus[d] for d in dids])
        # BM25 reads whole documents: every recorded answer is visible to it.
        seen = {q: {"answer_visible": True} for q in split.answer_span}
        rows += split_rows(task.name, split, score_matrix(scores, qids, dids, split.qrels), depth_buckets, seen)
        log.info("bm25 %s length=%s: %d queries x %d docs in %.1fs", task.name, split.length, len(qids), len(dids),
                 time.perf_counter() - t0)
    return rows + aggregate(rows)
