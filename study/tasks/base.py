"""What every retrieval task hands to the evaluator."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Split:
    """One candidate pool: queries are ranked against this corpus only.

    LongEmbed's synthetic tasks have one split per document length; a real task
    may have a single split (length=None) and record each query's document length.
    """

    length: int | None
    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: dict[str, dict[str, int]]
    # Relative position (0..1) of the answer in the relevant document, per query.
    depth: dict[str, float] = field(default_factory=dict)


@dataclass
class RetrievalTask:
    name: str
    query_instruction: str
    splits: list[Split]
    description: str = ""
    # Documents get no instruction, as in the paper; kept for tasks that want one.
    doc_instruction: str = ""
