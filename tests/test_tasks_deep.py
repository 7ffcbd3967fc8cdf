"""pydocs-deep: a passage taken out of a real page at a recorded depth; find the page among candidates."""

from __future__ import annotations

import pytest

from study.tasks.base import count_words
from study.tasks.pydocs_deep import MIN_PAGE_WORDS, build


def _pages(n: int = 30) -> dict[str, str]:
    """Fake documentation pages: numbered prose blocks, each unique, some code lines."""
    pages = {}
    for p in range(n):
        lines = []
        for i in range(40):
            if i % 7 == 3:
                lines.append(f"    x{p}_{i} = call({i})")
            else:
                lines.append(" ".join(f"page{p}word{i}w{k}" for k in range(30)) + ".")
        pages[f"library/mod{p}"] = "\n".join(lines)
    pages["library/short"] = "too short."
    return pages


def test_passages_are_removed_at_stratified_depths_and_recorded():
    pages = _pages()
    split = build(pages, num_queries=20, num_docs=25, seed=1)
    assert len(split.queries) == 20 and len(split.corpus) == 25
    for qid, passage in split.queries.items():
        (page,) = split.qrels[qid]
        assert passage not in split.corpus[page]  # the query's own words are gone from its page
        assert passage in pages[page]
        assert not passage.startswith(" ")  # a prose block, never a code line
        start, end = split.answer_span[qid]
        assert start == end  # the gap: where the passage stood
        assert split.corpus[page][:start] == pages[page][:start]
        assert count_words(pages[page]) >= MIN_PAGE_WORDS
    depths = sorted(split.depth.values())
    # Stratified: every fifth of [0, 1) holds 4 of the 20 queries (give or take the nearest-passage snap).
    counts = [sum(lo <= d < lo + 0.2 for d in depths) for lo in (0, 0.2, 0.4, 0.6, 0.8)]
    assert min(counts) >= 2 and max(counts) <= 6
    assert "library/short" not in {next(iter(r)) for r in split.qrels.values()}


def test_same_seed_same_task_other_seed_other_passages():
    pages = _pages()
    a, b, c = build(pages, 10, 15, 1), build(pages, 10, 15, 1), build(pages, 10, 15, 2)
    assert a.queries == b.queries and a.corpus == b.corpus and a.depth == b.depth
    assert a.queries != c.queries


def test_every_page_is_a_candidate_when_the_pool_is_large_enough():
    pages = _pages(12)
    split = build(pages, num_queries=5, num_docs=1000, seed=0)
    assert set(split.corpus) == set(pages)


@pytest.mark.slow
def test_real_pydocs_deep_builds_with_bm25_well_above_chance():
    from study.tasks.pydocs import find_deb

    if find_deb() is None:
        pytest.skip("python3.11-doc .deb not found: run `make setup`")
    from study.bm25 import evaluate_bm25
    from study.tasks.pydocs_deep import pydocs_deep

    task = pydocs_deep([], num_queries=60, num_docs=100, seed=1234)
    (split,) = task.splits
    assert len(split.queries) == 60 and len(split.corpus) == 100
    rows = evaluate_bm25(task)
    score = next(r["value"] for r in rows if r["query_id"] is None and r["length"] is None
                 and r["metric"] == "ndcg_at_1")
    assert score > 0.3  # chance is 0.01
