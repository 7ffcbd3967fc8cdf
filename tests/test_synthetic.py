"""LongEmbed-style synthetic tasks: deterministic, well-formed, answerable, with stratified depths."""

import re

import numpy as np
import pytest

from study.tasks import synthetic


@pytest.fixture(scope="module")
def tasks():
    return {name: getattr(synthetic, name)([256, 1024], 8, 16, seed=5) for name in ("passkey", "needle")}


@pytest.mark.parametrize("name", ["passkey", "needle"])
def test_same_seed_same_task_other_seed_other_task(name, tasks):
    again = getattr(synthetic, name)([256, 1024], 8, 16, seed=5)
    other = getattr(synthetic, name)([256, 1024], 8, 16, seed=6)
    assert [s.corpus for s in again.splits] == [s.corpus for s in tasks[name].splits]
    assert [s.corpus for s in other.splits] != [s.corpus for s in tasks[name].splits]


@pytest.mark.parametrize("name", ["passkey", "needle"])
def test_documents_fit_the_length_and_hold_their_needle_once(name, tasks):
    for split in tasks[name].splits:
        assert len(split.corpus) == 16 and len(split.queries) == 8
        for doc in split.corpus.values():
            # LongEmbed: at most 0.75 x length words.
            assert len(doc.split()) <= 0.75 * split.length
            assert len(doc.split()) >= 0.5 * split.length
        for qid, rel in split.qrels.items():
            (doc_id,) = rel
            doc = split.corpus[doc_id]
            depth = split.depth[qid]
            assert 0 <= depth <= 1
            # The needle sentence is inserted once, at (about) the recorded depth.
            if name == "passkey":
                who = re.search(r"for (.+)\?", split.queries[qid]).group(1)
                sentence = f"{who}'s passkey is"
            else:
                sentence = {"ingredient": "secret ingredient", "best thing": "best thing", "plays": "player of"}
                sentence = next(v for k, v in sentence.items() if k in split.queries[qid])
            assert doc.count(sentence) == 1
            at = doc.index(sentence) / len(doc)
            assert abs(at - depth) < 0.1
            # Only the relevant document answers the query.
            if name == "passkey":
                others = [d for i, d in split.corpus.items() if i != doc_id]
                assert not any(f"{who}'s passkey" in d for d in others)


def test_depths_are_stratified_over_buckets(tasks):
    split = tasks["needle"].splits[1]
    depths = np.array(list(split.depth.values()))
    # 8 queries out of 16 stratified documents: no empty half of the document.
    assert (depths < 0.5).any() and (depths >= 0.5).any()
    all_docs = synthetic._stratified_depths(np.random.default_rng(0), 100)
    counts = np.histogram(all_docs, bins=5, range=(0, 1))[0]
    assert counts.tolist() == [20] * 5


def test_needle_haystack_is_bible_text_and_passkey_haystack_is_filler(tasks):
    doc = next(iter(tasks["passkey"].splits[0].corpus.values()))
    assert "The grass is green. The sky is blue." in doc
    doc = next(iter(tasks["needle"].splits[0].corpus.values()))
    assert "LORD" in doc or "God" in doc or "unto" in doc


def test_needle_and_passkey_record_the_character_span_of_the_planted_sentence():
    from study.tasks.synthetic import needle, passkey

    for task in (passkey([256, 1024], 8, 8, seed=5), needle([256], 8, 8, seed=5)):
        for split in task.splits:
            assert set(split.answer_span) == set(split.queries)
            for qid, (start, end) in split.answer_span.items():
                doc = split.corpus[next(iter(split.qrels[qid]))]
                planted = doc[start:end]
                assert planted.endswith(".") and len(planted.split()) >= 6
                # The sentence the query asks about: its key word (the name or subject) is in it.
                key = split.queries[qid].rstrip("?").split()[-1]
                assert key.lower() in planted.lower()
                assert abs(start / len(doc) - split.depth[qid]) < 0.1
