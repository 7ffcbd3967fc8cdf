"""`pydocs-deep`: find a page from one of its own passages, taken out of it at a recorded depth.

Built offline from the same Python 3.11 documentation pages as `pydocs` (study.tasks.pydocs),
so no new text source: a deep-reading task on real text, next to the planted needles.

- Query pages: pages of at least MIN_PAGE_WORDS words. Each gets a target depth, stratified
  over [0, 1) (every depth bucket equally represented), and the passage nearest that depth is
  removed from it: a prose block (one line of the page text) of PASSAGE_WORDS words that is not
  code and is not repeated elsewhere in the page.
- Query: that passage, verbatim. Relevant document: its page, without the passage. So the
  query's own words are gone from the page, and what is left to match is the context around
  the gap -- which a model can only use if it read that far into the page.
- Candidates: `num_docs` pages (the query pages plus other pages, every page when num_docs is
  at least the number of pages), all with their passages removed where they were queried.
- Recorded per query: depth (word offset of the gap / page words), the word offset, the page
  length in words, and the character offset of the gap (the evaluator turns it into a token
  offset for each tokenizer, and so into `answer_visible` after truncation).

A pure function of the built pydocs folder and (eval.seed, num_queries, num_docs).
"""

from __future__ import annotations

import functools
import re

import numpy as np

from study.tasks.base import RetrievalTask, Split, TaskUnavailable, count_words, length_bucket
from study.tasks.beir import read_beir
from study.tasks.pydocs import pydocs_dir

INSTRUCTION = "Given a passage, retrieve the documentation page it was taken from: "
MIN_PAGE_WORDS = 300
PASSAGE_WORDS = (25, 80)
_CODE = re.compile(r"[{}();=<>\[\]]|>>>|^\s|\bdef\b|\bimport\b|\w+\.\w+\(")


def _is_prose(line: str) -> bool:
    """A passage a reader would quote: enough words, sentence punctuation, little code."""
    words = line.split()
    if not PASSAGE_WORDS[0] <= len(words) <= PASSAGE_WORDS[1] or not line.rstrip().endswith((".", ":")):
        return False
    return len(_CODE.findall(line)) <= 2


def _passages(lines: list[str]) -> list[tuple[int, int]]:
    """(line index, word offset) of every candidate passage of a page."""
    offsets = np.cumsum([0] + [count_words(ln) for ln in lines])
    seen: dict[str, int] = {}
    for ln in lines:
        seen[ln] = seen.get(ln, 0) + 1
    return [(i, int(offsets[i])) for i, ln in enumerate(lines) if _is_prose(ln) and seen[ln] == 1]


@functools.lru_cache(maxsize=1)
def _pages() -> dict[str, str]:

    corpus, *_ = read_beir(pydocs_dir())
    return corpus


def build(pages: dict[str, str], num_queries: int, num_docs: int, seed: int) -> Split:
    """The task's one split (a pure function of its arguments); see the module docstring."""
    rng = np.random.default_rng([seed, sum(map(ord, "pydocs-deep"))])
    eligible = []
    for pid in sorted(pages):
        lines = pages[pid].split("\n")
        words = count_words(pages[pid])
        spots = _passages(lines)
        if words >= MIN_PAGE_WORDS and spots:
            eligible.append((pid, lines, words, spots))
    if not eligible:
        raise TaskUnavailable("pydocs-deep: no page has a removable passage (is the pydocs build empty?)")
    n_queries = min(num_queries, num_docs, len(eligible))
    chosen = [eligible[i] for i in sorted(rng.choice(len(eligible), size=n_queries, replace=False))]
    depths = (rng.permutation(n_queries) + rng.random(n_queries)) / n_queries
    corpus, queries, qrels, depth, span, meta = {}, {}, {}, {}, {}, {}
    for (pid, lines, words, spots), target in zip(chosen, depths):
        # The passage nearest the target depth (by the word offset of its start).
        i, offset = min(spots, key=lambda s: abs(s[1] / words - target))
        passage = lines[i]
        kept = lines[:i] + lines[i + 1 :]
        text = "\n".join(kept)
        gap = min(sum(len(ln) + 1 for ln in lines[:i]), len(text))  # character offset of the gap in the page left
        qid = f"d-{pid.replace('/', '.')}"
        corpus[pid], queries[qid], qrels[qid] = text, passage, {pid: 1}
        page_words = words - count_words(passage)
        depth[qid] = round(offset / max(page_words, 1), 4)
        span[qid] = (gap, gap)
        meta[qid] = {"word_offset": offset, "page_words": page_words}
    others = [pid for pid in sorted(pages) if pid not in corpus]
    n_more = max(0, min(num_docs - len(corpus), len(others)))
    for k in sorted(rng.choice(len(others), size=n_more, replace=False)) if n_more else []:
        corpus[others[k]] = pages[others[k]]
    query_length = {q: length_bucket(meta[q]["page_words"]) for q in queries}
    return Split(length=None, queries=queries, corpus=corpus, qrels=qrels, depth=depth,
                 query_length=query_length, answer_span=span)


def pydocs_deep(lengths, num_queries: int, num_docs: int, seed: int) -> RetrievalTask:
    """The registered task: `num_queries` passages, `num_docs` candidate pages, from eval.seed."""
    return RetrievalTask(
        name="pydocs-deep",
        query_instruction=INSTRUCTION,
        splits=[build(_pages(), num_queries, num_docs, seed)],
        description="Python 3.11 docs: a passage taken out of a long page at a recorded depth; find the page",
    )
