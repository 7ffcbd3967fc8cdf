"""What every retrieval task hands to the evaluator, and helpers shared by the real-text tasks."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from study.errors import ConfigError


class TaskUnavailable(ConfigError):
    """A task's data is missing here (not built, not downloaded, offline); the message says how to get it."""


@dataclass
class Split:
    """One candidate pool: queries are ranked against this corpus only.

    LongEmbed's synthetic tasks have one split per document length; a real task
    has one split (length=None) over all its documents and records each query's
    length bucket in `query_length` (the nominal length of its relevant document),
    so one pool serves every length and the results table still has a length.
    """

    length: int | None
    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: dict[str, dict[str, int]]
    # Relative position (0..1) of the answer in the relevant document, per query.
    depth: dict[str, float] = field(default_factory=dict)
    # Per-query length bucket (tokens); overrides `length` in the results table.
    query_length: dict[str, int] = field(default_factory=dict)
    # Character span (start, end) of the answer in the relevant document, per query: the evaluator
    # turns it into token offsets, so it knows whether the answer survived truncation.
    answer_span: dict[str, tuple[int, int]] = field(default_factory=dict)

    def length_of(self, qid: str) -> int | None:
        return self.query_length.get(qid, self.length)


@dataclass
class RetrievalTask:
    name: str
    query_instruction: str
    splits: list[Split]
    description: str = ""
    # Documents get no instruction, as in the paper; kept for tasks that want one.
    doc_instruction: str = ""


# Length buckets of real documents, in the synthetic tasks' unit: a document of
# w words is about w / 0.75 tokens, and bucket L holds 0.375 L < words <= 0.75 L
# (powers of two, as LongEmbed's 256 ... 32768). Counting words keeps the bucket
# the same whatever the backbone's tokenizer.
WORDS_PER_TOKEN = 0.75
MIN_BUCKET = 256


def count_words(text: str) -> int:
    return len(text.split())


def length_bucket(words: int) -> int:
    tokens = max(words, 1) / WORDS_PER_TOKEN
    return max(MIN_BUCKET, 2 ** math.ceil(math.log2(tokens)))


def relevant_length(qrel: dict[str, int], corpus: dict[str, str]) -> int | None:
    """The length bucket of a query's relevant document (the most relevant one, ties by id)."""
    positives = sorted((-grade, did) for did, grade in qrel.items() if grade > 0 and did in corpus)
    if not positives:
        return None
    return length_bucket(count_words(corpus[positives[0][1]]))


def real_split(queries: dict[str, str], corpus: dict[str, str], qrels: dict[str, dict[str, int]],
               depth: dict[str, float] | None = None, length: int | None = None) -> Split:
    """A split over one candidate pool; queries without a relevant document in the pool are dropped.

    With `length` None each query gets its relevant document's length bucket."""
    qrels = {q: {d: int(g) for d, g in rel.items() if d in corpus} for q, rel in qrels.items() if q in queries}
    qrels = {q: rel for q, rel in qrels.items() if any(g > 0 for g in rel.values())}
    queries = {q: queries[q] for q in queries if q in qrels}
    depth = {q: v for q, v in (depth or {}).items() if q in queries and v is not None}
    query_length = {}
    if length is None:
        query_length = {q: b for q in queries if (b := relevant_length(qrels[q], corpus)) is not None}
    return Split(length=length, queries=queries, corpus=corpus, qrels=qrels, depth=depth, query_length=query_length)


_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Case- and whitespace-insensitive form, for 'is the query verbatim in its document' checks."""
    return _SPACE.sub(" ", text).strip().lower()
