"""The offline real-text tasks pydocs and pydocs-index: size, length spread, queries not in their pages,
index terms and depths, reproducible, disjoint from training text.

Needs the Debian package python3.11-doc (`make setup` downloads it into .cache/debs/).
"""

from __future__ import annotations

import json
import re

import pytest

from study.tasks.base import TaskUnavailable, count_words, normalize
from study.tasks.pydocs import build_pydocs, find_deb, pydocs_dir

DEB = find_deb()
needs_deb = pytest.mark.skipif(DEB is None, reason="python3.11-doc .deb not found: run `make setup`")


def test_missing_source_says_how_to_build(monkeypatch):
    import study.tasks.pydocs as pydocs

    monkeypatch.setattr(pydocs, "find_deb", lambda: None)
    with pytest.raises(TaskUnavailable, match=r"python3.11-doc.*make setup.*study build-task pydocs"):
        pydocs.pydocs()


@pytest.fixture(scope="module")
def built():
    folder = pydocs_dir(DEB)
    from study.tasks import build_task

    return folder, json.loads((folder / "manifest.json").read_text()), build_task("pydocs", None)


@needs_deb
@pytest.mark.slow
def test_pydocs_size_length_spread_and_queries(built):
    folder, manifest, task = built
    (split,) = task.splits
    assert manifest["source"]["package"] == "python3.11-doc" and "PSF" in manifest["source"]["license"]
    assert manifest["counts"]["documents"] == len(split.corpus) >= 400
    assert manifest["counts"]["queries"] == len(split.queries) >= 150
    words = sorted(count_words(t) for t in split.corpus.values())
    # From under a few hundred to tens of thousands of words, one pool.
    assert words[0] < 300 and words[-1] > 15_000
    buckets = {split.query_length[q] for q in split.queries}
    assert {512, 1024, 2048, 4096, 8192, 16384} <= buckets
    for qid, query in split.queries.items():
        (page,) = split.qrels[qid]
        assert normalize(query) not in normalize(split.corpus[page]), (qid, query, page)
        assert split.query_length[qid] == manifest_bucket(split.corpus[page])
    # Section-level modules have a depth inside their page; page-level ones have none.
    assert 0 < len(split.depth) < len(split.queries) and all(0 < d < 1 for d in split.depth.values())
    assert split.queries and task.query_instruction


@needs_deb
@pytest.mark.slow
def test_pydocs_index_terms_are_words_with_depths(built):
    from study.tasks import build_task
    from study.tasks.pydocs import _TERM, MAX_INDEX_PAGES

    _, manifest, pydocs = built
    task = build_task("pydocs-index", None)
    (split,) = task.splits
    assert split.corpus == pydocs.splits[0].corpus  # the same pages, other queries
    assert manifest["index_task"]["queries"] == len(split.queries) >= 100
    for qid, term in split.queries.items():
        # Identifier-only terms ("json.dumps() (in module json)", "PYTHONPATH") are left out.
        assert _TERM.match(term) and "(" not in term and "_" not in term and not term.isupper()
        assert 1 <= len(split.qrels[qid]) <= MAX_INDEX_PAGES
    # Terms that index one place have that place's position as depth, spread over the pages.
    depths = list(split.depth.values())
    assert len(depths) > len(split.queries) / 2 and all(0 <= d < 1 for d in depths)
    assert min(depths) < 0.2 and max(depths) > 0.8


def manifest_bucket(text: str) -> int:
    from study.tasks.base import length_bucket

    return length_bucket(count_words(text))


@needs_deb
@pytest.mark.slow
def test_pydocs_build_is_reproducible(built, tmp_path):
    folder, manifest, _ = built
    again = build_pydocs(DEB, tmp_path / "again")
    assert again["files"] == manifest["files"]
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        assert (tmp_path / "again" / name).read_bytes() == (folder / name).read_bytes()


def _text_ngrams(text: str, n: int = 8) -> set[int]:
    """Word 8-grams (as study.sources.word_ngrams) that hold at least one non-number word:
    runs of bare numbers ("1 2 3 4 5 6 7 8") occur in both sources and carry no text."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    grams = (tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return {hash(g) for g in grams if not all(w.isdigit() for w in g)}


@needs_deb
@pytest.mark.slow
def test_pydocs_is_disjoint_from_training_text(built):
    from study.sources import gcide_entries, word_ngrams
    from study.tasks import build_task

    _, _, task = built
    (split,) = task.splits
    eval_grams: set[int] = set()
    index_queries = list(build_task("pydocs-index", None).splits[0].queries.values())
    for text in list(split.corpus.values()) + list(split.queries.values()) + index_queries:
        eval_grams |= _text_ngrams(text)
    shared = [e.word for e in gcide_entries() if word_ngrams(e.text) & eval_grams]
    assert shared == []
