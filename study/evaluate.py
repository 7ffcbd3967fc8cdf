"""Retrieval evaluation: encode, rank by cosine, score with ir_measures (pytrec_eval backend).

Returns long-format rows for the results table: one per (query, metric), plus
aggregate means per (length, depth bucket), per length, and per task.
"""

from __future__ import annotations

import logging
import time

import ir_measures
import numpy as np
import pandas as pd
from ir_measures import RR, R, nDCG

from study.encode import document_scores, encode, encode_documents
from study.tasks.base import RetrievalTask

log = logging.getLogger(__name__)

# The metrics every evaluation reports (rows of the results table, objectives of sweeps), by name.
MEASURES = {"ndcg_at_1": nDCG @ 1, "ndcg_at_10": nDCG @ 10, "mrr_at_10": RR @ 10, "recall_at_1": R @ 1,
            "recall_at_10": R @ 10}
METRICS = tuple(MEASURES)
_NAMES = {str(m): name for name, m in MEASURES.items()}


def bucket_label(depth: float | None, buckets: int) -> str | None:
    if depth is None or np.isnan(depth):
        return None
    b = min(int(depth * buckets), buckets - 1)
    return f"{b / buckets:.1f}-{(b + 1) / buckets:.1f}"


def score_split(q_emb: np.ndarray, d_emb: np.ndarray, qids: list[str], dids: list[str], qrels) -> list[tuple]:
    return score_matrix(q_emb @ d_emb.T, qids, dids, qrels)


def score_matrix(scores: np.ndarray, qids: list[str], dids: list[str], qrels) -> list[tuple]:
    """(query, metric, value) for a [queries x documents] score matrix (cosines, BM25, ...)."""
    run = {q: {d: float(s) for d, s in zip(dids, row)} for q, row in zip(qids, scores)}
    per_query = {(q, name): 0.0 for q in qids for name in MEASURES}
    for m in ir_measures.iter_calc(list(MEASURES.values()), qrels, run):
        per_query[(m.query_id, _NAMES[str(m.measure)])] = float(m.value)
    return [(q, name, v) for (q, name), v in per_query.items()]


def visibility(builder, split, instruction: str = "") -> dict[str, dict]:
    """What the model saw of each query's relevant document, after truncation.

    Per query: `encoded_length` (text tokens of the relevant document actually encoded),
    `answer_offset` (token offset of the answer's start, when the task records where the answer is)
    and `answer_visible` (whether the whole answer lies inside the encoded tokens).

    Under model.encoding=echo the encoded text is one copy (half the room); under chunked every token of the
    document is encoded (encoded_length = its whole length) and the answer is visible when it lies whole
    inside one chunk (an answer cut by a chunk boundary is seen by no single chunk)."""
    chunked = getattr(builder, "chunk", None) is not None
    room = builder.text_room(instruction)
    qids = [q for q in split.queries if _relevant(split, q) is not None]
    docs = [split.corpus[_relevant(split, q)] for q in qids]
    lengths = [len(ids) for ids in builder.tokenize(docs)]
    spans = {q: split.answer_span[q] for q in qids if q in split.answer_span}
    ends = dict(zip(spans, builder.tokenize([split.corpus[_relevant(split, q)][: s[1]] for q, s in spans.items()])))
    starts = dict(zip(spans, builder.tokenize([split.corpus[_relevant(split, q)][: s[0]] for q, s in spans.items()])))
    out = {}
    for q, n in zip(qids, lengths):
        seen = n if chunked else min(n, room)
        row = {"encoded_length": seen, "answer_offset": None, "answer_visible": None}
        if q in spans:
            row["answer_offset"] = len(starts[q])
            row["answer_visible"] = (builder.answer_in_one_chunk(n, (len(starts[q]), len(ends[q])), instruction)
                                     if chunked else len(ends[q]) <= seen)
        out[q] = row
    return out


def _relevant(split, qid: str) -> str | None:
    """The query's most relevant document (ties by id), as the length bucket uses."""
    positives = sorted((-g, d) for d, g in split.qrels.get(qid, {}).items() if g > 0 and d in split.corpus)
    return positives[0][1] if positives else None


def evaluate_task(embed, builder, task: RetrievalTask, batch_tokens: int, precision: str, device,
                  depth_buckets: int = 5, use_instructions: bool = True, cache=None) -> list[dict]:
    """`cache` (study.embedding_cache.EmbeddingCache) makes re-evaluating the same checkpoint cheap."""
    rows = []
    instruction = task.query_instruction if use_instructions else ""
    for split in task.splits:
        t0 = time.perf_counter()
        qids, dids = list(split.queries), list(split.corpus)
        q_emb = encode(embed, builder, [split.queries[q] for q in qids], instruction, batch_tokens, precision, device,
                       cache=cache)
        # Documents are chunked under model.encoding=chunked (queries never are); max aggregation scores max-sim.
        d_emb = encode_documents(embed, builder, [split.corpus[d] for d in dids], task.doc_instruction,
                                 batch_tokens, precision, device, cache=cache)
        scores = document_scores(q_emb, d_emb)
        rows += split_rows(task.name, split, score_matrix(scores, qids, dids, split.qrels), depth_buckets,
                           visibility(builder, split, task.doc_instruction))
        log.info("%s length=%s: %d queries x %d docs in %.1fs", task.name, split.length, len(qids), len(dids),
                 time.perf_counter() - t0)
    return rows + aggregate(rows)


def split_rows(task_name: str, split, scored: list[tuple], depth_buckets: int = 5,
               seen: dict[str, dict] | None = None) -> list[dict]:
    """Per-query result rows; a real task's split gives each query its own length bucket.

    `seen` (from `visibility`) adds what the model saw of the relevant document."""
    rows = []
    for qid, metric, value in scored:
        depth = split.depth.get(qid)
        rows.append(dict(task=task_name, length=split.length_of(qid), depth=depth,
                         depth_bucket=bucket_label(depth, depth_buckets), query_id=qid, metric=metric, value=value,
                         candidates=len(split.corpus), **(seen or {}).get(qid, {})))
    return rows


def aggregate(rows: list[dict]) -> list[dict]:
    df = pd.DataFrame(rows)
    out = []
    if df.empty:
        return out
    per_query = df[df.query_id.notna()]
    has_depth = per_query.depth_bucket.notna().any()
    groupings = [["task", "length", "metric"]]
    if has_depth:
        groupings.insert(0, ["task", "length", "depth_bucket", "metric"])
    for keys in groupings:
        # Queries without a depth (real tasks' page-level queries) are in no depth bucket.
        source = per_query[per_query.depth_bucket.notna()] if "depth_bucket" in keys else per_query
        for vals, g in source.groupby(keys, dropna=False):
            out.append({**dict(zip(keys, vals)), "value": float(g.value.mean()), "query_id": None})
    # Task score: the mean over all its queries. The synthetic tasks have equally many queries per
    # length, so this is LongEmbed's mean over lengths; a real task's buckets hold unequal counts.
    with_length = per_query[per_query.length.notna()]
    for (task, metric), g in with_length.groupby(["task", "metric"]):
        out.append({"task": task, "length": None, "metric": metric, "value": float(g.value.mean()), "query_id": None})
    for r in out:
        r.setdefault("depth_bucket", None)
        r.setdefault("depth", None)
        if r["length"] is not None and pd.isna(r["length"]):
            r["length"] = None
    return out


def summary(rows: list[dict]) -> dict[str, float]:
    """Flat {'<task>/<metric>': value, '<task>/<length>/<metric>': value} of the aggregate rows."""
    out = {}
    for r in rows:
        if r["query_id"] is not None or r["depth_bucket"] is not None:
            continue
        key = f"{r['task']}/{r['metric']}" if r["length"] is None else f"{r['task']}/{r['length']}/{r['metric']}"
        out[key] = r["value"]
    tasks = sorted({r["task"] for r in rows})
    for m in MEASURES:
        vals = [out[f"{t}/{m}"] for t in tasks if f"{t}/{m}" in out]
        if vals:
            out[f"average/{m}"] = float(np.mean(vals))
    return out
