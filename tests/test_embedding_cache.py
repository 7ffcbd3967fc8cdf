"""The corpus-embedding cache: a second evaluation of the same checkpoint does not call the model."""

import numpy as np
import pytest
import torch
from run_helpers import make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from study.model import load_trained
    from study.train import eval_builder

    run_dir = make_run(tmp_path_factory.mktemp("cache"), "run")
    embedder, backbone, cfg = load_trained(run_dir)
    return run_dir, embedder, eval_builder(cfg, backbone)


def counting(embedder):
    calls = []

    def embed(batch):
        calls.append(batch["input_ids"].shape[0])
        return embedder(batch)

    return embed, calls


def test_second_evaluation_skips_the_model_and_returns_identical_rows(run):
    from study.embedding_cache import run_cache
    from study.evaluate import evaluate_task
    from study.tasks.synthetic import needle

    run_dir, embedder, builder = run
    task = needle([64, 96], 3, 6, seed=5)
    embed, calls = counting(embedder)
    cache = run_cache(run_dir, embedder)
    first = evaluate_task(embed, builder, task, 4096, "bf16-mixed", "cpu", cache=cache)
    assert sum(calls) == 2 * (3 + 6) and cache.misses == 4 and cache.hits == 0
    calls.clear()
    cache = run_cache(run_dir, embedder)  # a new process would build it the same way
    second = evaluate_task(embed, builder, task, 4096, "bf16-mixed", "cpu", cache=cache)
    assert calls == [] and cache.hits == 4
    assert first == second
    assert (run_dir / "embeddings").is_dir()


def test_cache_keys_follow_model_settings_and_text(run, tmp_path):
    from study.embedding_cache import EmbeddingCache, weights_fingerprint
    from study.encode import encode
    from study.inputs import InputBuilder

    run_dir, embedder, builder = run
    texts = ["one text", "another text"]
    cache = EmbeddingCache(tmp_path, weights_fingerprint(embedder))
    base = encode(embedder, builder, texts, cache=cache)
    assert cache.misses == 1
    # Same everything: a hit, identical vectors.
    np.testing.assert_array_equal(encode(embedder, builder, texts, cache=cache), base)
    assert cache.hits == 1
    # Another instruction, precision, max_length or text: misses.
    encode(embedder, builder, texts, "Instruct: ", cache=cache)
    encode(embedder, builder, texts, precision="32-true", cache=cache)
    short = InputBuilder(builder.tokenizer, 8, builder.padding_side)
    encode(embedder, short, texts, cache=cache)
    encode(embedder, builder, ["one text", "another text!"], cache=cache)
    assert cache.misses == 5 and cache.hits == 1
    # Other weights: another fingerprint.
    before = weights_fingerprint(embedder)
    with torch.no_grad():
        p = next(embedder.parameters())
        saved = p.clone()
        p.add_(1e-3)
        assert weights_fingerprint(embedder) != before
        p.copy_(saved)
    assert weights_fingerprint(embedder) == before
    # A corrupt entry is a miss, not a crash.
    for f in cache.dir.glob("*.npy"):
        f.write_bytes(b"garbage")
    np.testing.assert_allclose(encode(embedder, builder, texts, cache=cache), base, atol=1e-6)
    assert cache.misses == 6
