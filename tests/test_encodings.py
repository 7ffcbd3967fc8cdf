"""Issue 11: how a document is read (model.encoding = full | echo | chunked) and the mask-token readout.

Every test here can fail: echo must let the first pooled token see the end of the text under causal
attention (full must not), one chunk must equal full, max-sim must pick the chunk holding a planted
needle, the mask tokens must see every document token, and echo/full must never share a cache entry.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from study.cli import main
from study.config import load_config
from study.errors import ConfigError

TINY = ["model.backbone=tiny-qwen2", "eval.max_length=256"]


def _model(*overrides):
    from study.backbones.loading import load_backbone
    from study.inference import eval_builder
    from study.model import build_embedder

    cfg = load_config(overrides=TINY + list(overrides))
    torch.manual_seed(0)
    backbone = load_backbone(cfg.model, seed=0)
    embedder = build_embedder(backbone, cfg.model).eval()
    return embedder, eval_builder(cfg, backbone), cfg


# ------------------------------------------------------------------ validation (before any compute)


@pytest.mark.parametrize("override,named,options", [
    ("model.encoding=twice", "model.encoding='twice'", "full, echo, chunked"),
    ("model.chunk.aggregate=median", "model.chunk.aggregate='median'", "mean, max"),
    ("model.pooling=cls", "model.pooling='cls'", "mask_tokens"),
])
def test_bad_choices_exit_2_naming_the_value_and_options(capsys, tmp_path, override, named, options):
    code = main(["train", f"output_dir={tmp_path}", "model.encoding=chunked", override])
    assert code == 2
    err = capsys.readouterr().err
    assert named in err and options in err
    assert list(tmp_path.iterdir()) == []


def test_mask_tokens_refuses_causal_before_any_file(capsys, tmp_path):
    code = main(["train", f"output_dir={tmp_path}", "model.pooling=mask_tokens", "model.attention=causal"])
    assert code == 2
    err = capsys.readouterr().err
    assert "model.pooling='mask_tokens'" in err and "model.attention='causal'" in err
    assert "mean, last_token, first_token, weighted_mean, latent_attention" in err  # the valid options
    assert list(tmp_path.iterdir()) == []
    code = main(["eval", f"output_dir={tmp_path}", "model.pooling=mask_tokens", "model.attention=causal"])
    assert code == 2 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("overrides,match", [
    (["model.encoding=chunked", "model.chunk.overlap=512"], r"model.chunk.overlap=512 must be >= 0 and < model.chunk.length=512"),
    (["model.encoding=chunked", "model.chunk.length=4"], r"model.chunk.length=4 must be >= 8"),
    (["model.pooling=mask_tokens", "model.mask_tokens=0"], r"model.mask_tokens=0 must be between 1 and 64"),
])
def test_numeric_encoding_settings_are_checked(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=overrides)


def test_encoding_is_sweepable_and_lands_in_the_flat_config():
    from study.config import flatten

    cfg = load_config(overrides=["model.encoding=chunked", "model.chunk.length=128", "model.chunk.aggregate=max"])
    flat = flatten(cfg)
    assert flat["model.encoding"] == "chunked" and flat["model.chunk.length"] == 128
    assert flat["model.chunk.aggregate"] == "max"


# ------------------------------------------------------------------ echo


def test_echo_layout_pools_only_the_second_copy(tokenizer):
    from study.inputs import InputBuilder

    for side in ("left", "right"):
        b = InputBuilder(tokenizer, 64, side, encoding="echo")
        text = b.tokenize(["the cat sat on the mat"])[0]
        batch = b(["the cat sat on the mat", "a b"], "Retrieve: ")
        row_ids = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
        pooled = batch["input_ids"][0][batch["pool_mask"][0].bool()].tolist()
        assert pooled == text + [tokenizer.eos_token_id]
        assert row_ids[-len(text) * 2 - 1 : -1] == text + text  # text twice, then </s>


def test_echo_gives_each_copy_half_the_room(tokenizer):
    from study.inputs import InputBuilder

    full, echo = InputBuilder(tokenizer, 40, "right"), InputBuilder(tokenizer, 40, "right", encoding="echo")
    ids = full.tokenize(["word " * 100])[0]
    assert echo.text_room() == full.text_room() // 2
    seq, start = echo.sequence(ids)
    assert len(seq) <= 40 and seq[start:-1] == ids[: echo.text_room()]


@pytest.mark.parametrize("pooling", ["first_token", "mean"])
def test_echo_under_causal_attention_sees_the_last_word_from_the_first_pooled_token(pooling):
    """Changing the last word moves the first pooled position's state under echo, never under full causal."""
    a, b = "the quick brown fox jumps over the lazy dog", "the quick brown fox jumps over the lazy cat"
    states = {}
    for encoding in ("full", "echo"):
        embedder, builder, _ = _model("model.attention=causal", f"model.pooling={pooling}",
                                      f"model.encoding={encoding}")
        with torch.no_grad():
            for text in (a, b):
                batch = builder([text])
                hidden = embedder.backbone(input_ids=batch["input_ids"],
                                           attention_mask=batch["attention_mask"]).last_hidden_state
                first = int(batch["pool_mask"][0].nonzero()[0])
                states[encoding, text] = hidden[0, first]
    assert torch.allclose(states["full", a], states["full", b], atol=1e-6)
    assert not torch.allclose(states["echo", a], states["echo", b], atol=1e-4)


def test_echo_encodes_unit_vectors():
    embedder, builder, _ = _model("model.attention=causal", "model.encoding=echo", "model.pooling=first_token")
    from study.encode import encode

    emb = encode(embedder, builder, ["one two three four", "five six seven eight nine"], precision="32-true")
    assert emb.shape[0] == 2 and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)


# ------------------------------------------------------------------ chunked


def test_split_covers_every_token_with_overlap(tokenizer):
    from study.inputs import ChunkSpec, InputBuilder

    b = InputBuilder(tokenizer, 64, "right", encoding="chunked", chunk=ChunkSpec(10, 3))
    chunks, owner = b.split([list(range(25)), list(range(7)), []])
    assert b.chunk_window() == (10, 7)
    assert owner == [0, 0, 0, 0, 1, 2]
    assert chunks[:4] == [list(range(0, 10)), list(range(7, 17)), list(range(14, 24)), list(range(21, 25))]
    assert chunks[4] == list(range(7)) and chunks[5] == []


def test_chunk_window_is_capped_by_the_sequence_room(tokenizer):
    from study.inputs import ChunkSpec, InputBuilder

    b = InputBuilder(tokenizer, 32, "right", encoding="chunked", chunk=ChunkSpec(512, 0))
    assert b.chunk_window()[0] == b.text_room()


def test_answer_in_one_chunk(tokenizer):
    from study.inputs import ChunkSpec, InputBuilder

    b = InputBuilder(tokenizer, 64, "right", encoding="chunked", chunk=ChunkSpec(10, 0))
    assert b.answer_in_one_chunk(40, (2, 8)) and b.answer_in_one_chunk(40, (30, 40))
    assert not b.answer_in_one_chunk(40, (8, 12))  # cut by the boundary at 10
    o = InputBuilder(tokenizer, 64, "right", encoding="chunked", chunk=ChunkSpec(10, 4))  # starts 0, 6, 12, ...
    assert o.answer_in_one_chunk(40, (8, 12)) and not o.answer_in_one_chunk(40, (8, 17))
    assert o.answer_in_one_chunk(9, (0, 9))  # one chunk holds the whole document


@pytest.mark.parametrize("aggregate", ["mean", "max"])
def test_one_chunk_equals_full(aggregate):
    from study.encode import document_scores, encode, encode_documents

    texts = ["a short document about the sea", "another one, about mountains and rivers and the weather"]
    full_model, full_builder, _ = _model("model.attention=bidirectional")
    chunk_model, chunk_builder, _ = _model("model.attention=bidirectional", "model.encoding=chunked",
                                           "model.chunk.length=64", f"model.chunk.aggregate={aggregate}")
    full = encode(full_model, full_builder, texts, precision="32-true")
    chunked = encode_documents(chunk_model, chunk_builder, texts, precision="32-true")
    q = encode(full_model, full_builder, ["the sea"], precision="32-true")
    vectors = chunked if aggregate == "mean" else chunked.vectors
    assert vectors.shape == full.shape
    np.testing.assert_allclose((vectors * full).sum(1), 1.0, atol=1e-5)  # cosine ~1
    np.testing.assert_allclose(document_scores(q, chunked), q @ full.T, atol=1e-5)


def _bag_of_words(vocab: int):
    """A stand-in embedder: the pooled tokens' counts (a document is similar to a query sharing its words)."""
    calls = []

    def embed(batch):
        calls.append(batch["input_ids"].shape[0])
        onehot = torch.nn.functional.one_hot(batch["input_ids"], vocab).float()
        return (onehot * batch["pool_mask"].unsqueeze(-1)).sum(1)

    return embed, calls


def test_max_sim_picks_the_chunk_holding_a_planted_needle(tokenizer):
    from study.encode import ChunkedEmbeddings, encode, encode_documents
    from study.inputs import ChunkSpec, InputBuilder

    filler = "grass is green and the sky is blue today . " * 12
    docs = [filler + "the secret code is purple elephant seven . " + filler, filler * 2, filler + filler[:40]]
    b = InputBuilder(tokenizer, 256, "right", append_eos=False, encoding="chunked", chunk=ChunkSpec(32, 0, "max"))
    embed, calls = _bag_of_words(len(tokenizer))
    chunked = encode_documents(embed, b, docs, batch_tokens=1 << 20, precision="32-true")
    assert isinstance(chunked, ChunkedEmbeddings) and len(chunked) == 3
    chunks, owner = b.split(b.tokenize(docs))
    assert calls == [len(chunks)]  # every chunk of every document in one batch: no per-document loop
    q = encode(embed, InputBuilder(tokenizer, 256, "right", append_eos=False), ["the secret code is purple elephant seven"],
               precision="32-true")
    start = len(b.tokenize([docs[0][: docs[0].index(" the secret")]])[0])
    end = len(b.tokenize([docs[0][: docs[0].index("seven") + 5]])[0])
    assert start // 32 == (end - 1) // 32  # the needle sits inside one chunk
    assert chunked.best_chunk(q)[0, 0] == start // 32
    scores = chunked.scores(q)[0]
    assert scores.argmax() == 0  # and the needle's document ranks first
    # the mean of the same chunks dilutes the needle: its score is lower than the best chunk's
    mean_b = InputBuilder(tokenizer, 256, "right", append_eos=False, encoding="chunked", chunk=ChunkSpec(32, 0, "mean"))
    mean = encode_documents(embed, mean_b, docs, batch_tokens=1 << 20, precision="32-true")
    assert (q @ mean.T)[0, 0] < scores[0]


def test_chunked_batches_across_documents_with_a_real_model():
    from study.encode import encode_documents

    embedder, builder, _ = _model("model.encoding=chunked", "model.chunk.length=16")
    calls = []

    def embed(batch):
        calls.append(batch["input_ids"].shape)
        return embedder(batch)

    docs = ["word " * 40, "other " * 30, "third text " * 25]
    out = encode_documents(embed, builder, docs, batch_tokens=1 << 16, precision="32-true")
    assert out.shape == (3, embedder.backbone.config.hidden_size) and len(calls) == 1
    assert calls[0][0] == len(builder.split(builder.tokenize(docs))[0]) > 3


def test_visibility_under_each_encoding():
    from study.evaluate import visibility
    from study.tasks.synthetic import needle

    task = needle([256], num_queries=4, num_docs=6, seed=0)
    split = task.splits[0]
    rows = {}
    for encoding in ("full", "echo", "chunked"):
        _, builder, _ = _model(f"model.encoding={encoding}", "model.chunk.length=64", "eval.max_length=160")
        rows[encoding] = visibility(builder, split, task.doc_instruction)
    q = next(iter(rows["full"]))
    n = len(_model()[1].tokenize([split.corpus[next(d for d, g in split.qrels[q].items() if g > 0)]])[0])
    assert rows["chunked"][q]["encoded_length"] == n > rows["full"][q]["encoded_length"]
    assert rows["echo"][q]["encoded_length"] < rows["full"][q]["encoded_length"]
    assert all(r["answer_visible"] is not None for r in rows["chunked"].values())


def test_chunked_training_aggregates_chunks_per_document():
    from study.backbones.loading import load_backbone
    from study.inputs import builder_from_config
    from study.losses import InfoNCE
    from study.model import build_embedder, mean_of_chunks
    from study.module import ContrastiveModule
    from study.train import PairCollator, optimizer_factory

    cfg = load_config(overrides=TINY + ["model.encoding=chunked", "model.chunk.length=12", "model.max_length=32"])
    backbone = load_backbone(cfg.model, seed=0)
    embedder = build_embedder(backbone, cfg.model)
    builder = builder_from_config(backbone.tokenizer, cfg.model.max_length, backbone.padding_side, cfg.model)
    rows = [{"query": f"question {i}", "positive": f"document {i} " * (5 + 6 * i), "negatives": [f"neg {i} " * 9]}
            for i in range(3)]
    batch = PairCollator(builder, 1, False)(rows)
    owner = batch["docs"]["chunk_owner"]
    assert owner.max().item() == 5 and len(owner) > 6  # 6 documents, some in several chunks
    docs = embedder(batch["docs"])
    assert docs.shape[0] == 6
    module = ContrastiveModule(embedder, InfoNCE(0.05, gather=False), optimizer_factory(cfg.optim, 10))
    loss, _, _ = module._step(batch)
    loss.backward()
    assert torch.isfinite(loss) and embedder.backbone.embed_tokens.weight.grad.abs().sum() > 0
    # mean of chunks = renormalised mean of unit chunk vectors
    x = torch.randn(5, 4)
    got = mean_of_chunks(x, torch.tensor([0, 0, 1, 1, 1]))
    unit = torch.nn.functional.normalize(x, dim=-1)
    want = torch.nn.functional.normalize(torch.stack([unit[:2].mean(0), unit[2:].mean(0)]), dim=-1)
    torch.testing.assert_close(got, want)


# ------------------------------------------------------------------ mask tokens


def test_mask_tokens_layout_and_token(tokenizer):
    from study.inputs import InputBuilder, mask_token_id

    assert mask_token_id(tokenizer) == (tokenizer.mask_token_id, "mask_token")
    for side in ("left", "right"):
        b = InputBuilder(tokenizer, 64, side, mask_tokens=3, exclude_instruction=True)
        batch = b(["some document text", "x"], "Retrieve: ")
        for row in range(2):
            pooled = batch["input_ids"][row][batch["pool_mask"][row].bool()].tolist()
            assert pooled == [tokenizer.mask_token_id] * 3
            real = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
            assert real[-4:] == [tokenizer.mask_token_id] * 3 + [tokenizer.eos_token_id]


def test_mask_token_falls_back_to_pad_when_the_tokenizer_has_none():
    from study.inputs import mask_token_id

    class NoMask:
        mask_token_id, pad_token_id, unk_token_id, eos_token_id = None, 7, 8, 9

    assert mask_token_id(NoMask()) == (7, "pad_token")


def test_mask_token_states_change_when_any_document_token_changes():
    embedder, builder, _ = _model("model.attention=bidirectional", "model.pooling=mask_tokens", "model.mask_tokens=4")
    ids = builder.tokenize(["a document of a dozen or so tokens for the readout test"])[0]
    with torch.no_grad():
        base = embedder(builder.collate([ids]))
        for i in range(len(ids)):
            changed = list(ids)
            changed[i] = (ids[i] + 17) % len(builder.tokenizer)
            out = embedder(builder.collate([changed]))
            assert not torch.allclose(out, base, atol=1e-5), f"token {i} did not reach the mask tokens"


def test_mask_tokens_train_step_runs_on_bidirectional():
    from study.encode import encode

    embedder, builder, _ = _model("model.attention=bidirectional", "model.pooling=mask_tokens", "model.mask_tokens=2")
    emb = encode(embedder, builder, ["x y z", "a much longer text " * 20], precision="32-true")
    assert emb.shape == (2, embedder.backbone.config.hidden_size)


# ------------------------------------------------------------------ cache and results


def test_echo_and_full_never_share_a_cache_entry(tmp_path):
    from study.embedding_cache import EmbeddingCache, model_key
    from study.encode import encode

    full_model, full_builder, full_cfg = _model("model.attention=causal")
    echo_model, echo_builder, echo_cfg = _model("model.attention=causal", "model.encoding=echo")
    assert model_key(full_model, full_cfg.model) != model_key(echo_model, echo_cfg.model)
    # even under one (forced) model key, the builder's encoding keeps the entries apart
    cache = EmbeddingCache(tmp_path, "same-model")
    texts = ["one text", "another text"]
    a = encode(full_model, full_builder, texts, precision="32-true", cache=cache)
    b = encode(echo_model, echo_builder, texts, precision="32-true", cache=cache)
    assert cache.misses == 2 and cache.hits == 0 and not np.allclose(a, b)
    assert cache.key(full_builder, texts, "", "32-true") != cache.key(echo_builder, texts, "", "32-true")


def test_eval_writes_the_encoding_column_and_the_whole_document_length(tmp_path, monkeypatch):
    from study.run_eval import run_eval

    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    common = ["model.backbone=tiny-qwen2", "tasks=[needle]", "eval.lengths=[256]", "eval.num_queries=4",
              "eval.num_docs=6", f"output_dir={tmp_path}", "wandb.mode=disabled", "eval.max_length=128"]
    tables = {e: run_eval(None, common + [f"model.encoding={e}", "model.chunk.length=64",
                                          "model.chunk.aggregate=max"]).table for e in ("full", "chunked")}
    for e, t in tables.items():
        assert set(t.encoding.dropna()) == {e}
    per_query = {e: t[t.query_id.notna()] for e, t in tables.items()}
    assert (per_query["full"].encoded_length <= 128).all()
    assert (per_query["chunked"].encoded_length > 128).all()
    entries = list((tmp_path / "cache" / "embeddings").glob("*/*.npy"))
    assert len({p.parent for p in entries}) == 2


def test_old_tables_read_as_full():
    import pandas as pd

    from analysis.load import normalise

    df = pd.DataFrame([{"backbone": "tiny-qwen2", "attention": "causal", "pooling": "mean", "task": "needle",
                        "metric": "mrr_at_10", "value": 0.5}, {"backbone": "bm25", "task": "needle",
                                                              "metric": "mrr_at_10", "value": 0.9}])
    out = normalise(df)
    assert out.encoding.tolist()[0] == "full" and pd.isna(out.encoding.tolist()[1])


def test_analysis_cells_keep_encodings_apart():
    """echo-causal is never pooled with full-causal: the encoding is part of every cell's identity."""
    import pandas as pd

    from analysis import stats
    from analysis.load import normalise
    from analysis.text import describe_difference

    rows = []
    for encoding, gap in (("full", 0.0), ("echo", 0.5)):
        for attention in ("bidirectional", "causal"):
            for q in range(8):
                value = 0.5 + (gap if attention == "causal" and encoding == "echo" else 0) + 0.01 * q
                rows.append(dict(backbone="mini-qwen2", encoding=encoding, attention=attention, pooling="mean",
                                 seed=0, task="needle", length=512, query_id=f"q{q}", metric="mrr_at_10",
                                 value=min(value, 1.0)))
    df = normalise(pd.DataFrame(rows))
    assert stats.cell_keys(df) == ["backbone", "encoding", "pooling"]
    assert stats.cell_keys(df, "task", attention=True) == ["backbone", "encoding", "attention", "pooling", "task"]
    diffs = stats.paired_differences(df, stats.cell_keys(df), n_resamples=200, n_permutations=200)
    by = dict(zip(diffs.encoding, diffs["diff"]))
    assert by["full"] == pytest.approx(0.0) and by["echo"] < -0.4
    assert "mini-qwen2 / echo / mean" in describe_difference(diffs[diffs.encoding == "echo"].iloc[0], "mrr_at_10")
    scores, _ = stats.summary_table(df, n_resamples=200)
    assert list(scores.index.names) == ["backbone", "encoding", "attention", "pooling"]
    one = df[df.encoding == "full"]  # a study of one encoding keeps the backbone x attention x pooling layout
    assert stats.cell_keys(one) == ["backbone", "pooling"]


def test_a_trained_run_can_be_read_chunked_at_evaluation(tmp_path, monkeypatch, capsys):
    """How documents are read is not in the weights: `study eval runs/<run> model.encoding=chunked` works,
    other model keys stay fixed."""
    from run_helpers import make_run

    from study.run_eval import run_eval

    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    run = make_run(tmp_path, "r", "model.backbone=tiny-qwen2", "wandb.mode=disabled")
    common = ["tasks=[passkey]", "eval.lengths=[256]", "eval.num_queries=3", "eval.num_docs=4", "eval.max_length=128"]
    result = run_eval(str(run), common + ["model.encoding=chunked", "model.chunk.length=64",
                                          "model.chunk.aggregate=max"])
    assert set(result.table.encoding.dropna()) == {"chunked"}
    assert (result.table[result.table.query_id.notna()].encoded_length > 128).all()
    assert main(["eval", str(run), "model.pooling=last_token", *common]) == 2
    assert "cannot be changed" in capsys.readouterr().err


@pytest.mark.parametrize("overrides,match", [
    (["model.encoding=echo"], "model.encoding='echo' cannot be expressed"),
    (["model.pooling=mask_tokens"], "model.pooling='mask_tokens' cannot be expressed"),
])
def test_export_refuses_what_sentence_transformers_cannot_express(overrides, match):
    from study.export import check_exportable

    with pytest.raises(ConfigError, match=match):
        check_exportable(load_config(overrides=overrides).model, "sentence-transformers")
