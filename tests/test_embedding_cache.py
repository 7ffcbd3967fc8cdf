"""The corpus-embedding cache: a second evaluation of the same checkpoint does not call the model."""

import numpy as np
import pytest
import torch
from run_helpers import make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from study.inference import eval_builder, load_trained

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
    cfg = __import__("study.config", fromlist=["load_config"]).load_config(run_dir / "config.yaml")
    task = needle([64, 96], 3, 6, seed=5)
    embed, calls = counting(embedder)
    cache = run_cache(run_dir, embedder, cfg.model)
    first = evaluate_task(embed, builder, task, 4096, "bf16-mixed", "cpu", cache=cache)
    assert sum(calls) == 2 * (3 + 6) and cache.misses == 4 and cache.hits == 0
    calls.clear()
    cache = run_cache(run_dir, embedder, cfg.model)  # a new process would build it the same way
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


MODEL_SETTINGS = [  # every model setting that changes a vector must change the cache identity
    ("attention", "causal"), ("pooling", "last_token"), ("max_length", 64), ("exclude_instruction", True),
    ("append_eos", False), ("padding_side", "left"), ("dtype", "float32"), ("attn_implementation", "eager"),
    ("latent_attention.num_latents", 7), ("lora.r", 4),
    ("encoding", "echo"), ("encoding", "chunked"), ("chunk.length", 64), ("chunk.aggregate", "max"),
    ("pooling", "mask_tokens"), ("mask_tokens", 2),
]


@pytest.mark.parametrize("key,value", MODEL_SETTINGS)
def test_model_key_changes_with_every_model_setting(run, key, value):
    from omegaconf import OmegaConf

    from study.config import load_config
    from study.embedding_cache import model_key

    run_dir, embedder, _ = run
    cfg = load_config(run_dir / "config.yaml")
    base = model_key(embedder, cfg.model)
    assert model_key(embedder, cfg.model) == base  # deterministic
    other = OmegaConf.to_container(cfg.model, resolve=True)
    OmegaConf.update(other := OmegaConf.create(other), key, value)
    assert OmegaConf.select(cfg.model, key) != value
    assert model_key(embedder, other) != base


def test_bidirectional_and_causal_evaluations_never_share_an_entry(tmp_path, monkeypatch):
    """Issue 9.1: the same random-init backbone evaluated bidirectional then causal, one shared cache."""
    from study.run_eval import run_eval

    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    common = ["model.backbone=tiny-qwen2", "model.pooling=mean", "tasks=[passkey]", "eval.lengths=[128]",
              "eval.num_queries=6", "eval.num_docs=8", f"output_dir={tmp_path}", "wandb.mode=disabled", "seed=3"]
    tables = {a: run_eval(None, common + [f"model.attention={a}"]).table for a in ("bidirectional", "causal")}
    entries = list((tmp_path / "cache" / "embeddings").glob("*/*.npy"))
    assert len({p.parent for p in entries}) == 2  # one model identity per attention direction
    assert len(entries) == 4  # queries + documents, each encoded under both directions
    # and the causal numbers are the causal model's, not the cached bidirectional ones
    mrr = [t[(t.metric == "mrr_at_10") & t.query_id.notna()].sort_values("query_id").value.to_numpy() for t in tables.values()]
    assert len(mrr[0]) == 6 and not (mrr[0] == mrr[1]).all()
