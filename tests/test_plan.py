"""The cost plan against hand-computed numbers for the tiny Qwen2 (4 layers, d 256, 4 heads, 2 KV heads
of 64, MLP 1024, vocabulary 8192, tied embeddings)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from study.cli import main
from study.config import load_config
from study.errors import ConfigError
from study.plan import arch_of, plan_config, plan_file

ROOT = Path(__file__).parent.parent
# Per layer: q 256x256 + bias 256, k and v 256x128 + bias 128 each, o 256x256, gate/up/down 3 x 256x1024,
# two RMSNorms 2 x 256; plus the final norm 256. The 8192 x 256 embedding table is a lookup (no FLOPs).
N_TINY = 4 * (256 * 256 + 256 + 2 * (256 * 128 + 128) + 256 * 256 + 3 * 256 * 1024 + 2 * 256) + 256
EMBEDDING = 8192 * 256
BASE = ["model.max_length=128", "trainer.max_steps=10", "trainer.batch_size=4", "data.hard_negatives=1",
        "eval.tasks=[passkey]", "eval.lengths=[256]", "eval.num_docs=8", "eval.num_queries=4", "trainer.devices=1"]


def test_parameters_from_the_meta_model_equal_the_real_model():
    from study.backbones.loading import load_backbone

    cfg = load_config(None, BASE)
    arch = arch_of(cfg.model)
    assert arch.matmul_params == N_TINY and arch.embedding_params == EMBEDDING
    real = load_backbone(cfg.model, seed=0).model
    assert arch.params == sum(p.numel() for p in real.parameters())
    assert (arch.layers, arch.hidden, arch.attn_width, arch.kv_width, arch.intermediate) == (4, 256, 256, 128, 1024)


def test_training_and_evaluation_flops_match_hand_computation():
    cfg = load_config(None, BASE)
    p = plan_config(cfg, gpu="h100", utilization=0.5, query_tokens=16, doc_tokens=128)
    # One step: 4 queries of 16 tokens, 4 positives + 4 hard negatives of 128 tokens; 10 steps.
    tokens = 10 * (4 * 16 + 8 * 128)
    assert p.train["tokens"] == tokens == 10880
    matmul = 6 * N_TINY * tokens  # full fine-tuning, no checkpointing: forward 2N + backward 4N
    attention = 10 * 12 * 4 * 256 * (4 * 16**2 + 8 * 128**2)  # 12 L T^2 d per sequence
    assert p.train["matmul"] == matmul and p.train["attention"] == attention
    # Evaluation: 8 documents of 256 tokens + 4 queries of 32, forward only.
    fwd = lambda t: 2 * N_TINY * t + 4 * 4 * t * t * 256  # noqa: E731
    assert p.eval_flops == 8 * fwd(256) + 4 * fwd(32)
    assert p.train_seconds == pytest.approx((matmul + attention) / (989e12 * 0.5))
    assert p.eval_seconds == pytest.approx(p.eval_flops / (989e12 * 0.5))
    assert p.gpu_hours == pytest.approx((p.train_seconds + p.eval_seconds) / 3600)


def test_lora_and_checkpointing_change_the_passes():
    cfg = load_config(None, BASE + ["model.lora.r=8", "model.gradient_checkpointing=true"])
    p = plan_config(cfg, query_tokens=16, doc_tokens=128)
    # r (in + out) per targeted projection: q 8x512, k 8x384, v 8x384, o 8x512, gate/up/down 8x1280, 4 layers.
    lora = 4 * 8 * (512 + 384 + 384 + 512 + 3 * 1280)
    assert p.arch.lora_params == lora
    tokens = 10880
    # Frozen weights: no weight gradients (-2N), recomputed forward (+2N): 6N again; LoRA weights 2 x 4 passes.
    assert p.train["matmul"] == 6 * N_TINY * tokens + 2 * lora * tokens * 4
    assert p.train["attention"] == 10 * 16 * 4 * 256 * (4 * 16**2 + 8 * 128**2)  # 1 + 2 + 1 recomputed forward


def test_memory_fsdp_shards_and_checkpointing_keeps_layer_inputs():
    big = BASE + ["trainer.accelerator=gpu", "trainer.devices=4", "model.dtype=bfloat16",
                  "trainer.precision=bf16-mixed"]
    ddp = plan_config(load_config(None, big + ["trainer.strategy=ddp"]), query_tokens=16, doc_tokens=128)
    fsdp = plan_config(load_config(None, big + ["trainer.strategy=fsdp"]), query_tokens=16, doc_tokens=128)
    params = N_TINY + EMBEDDING
    assert ddp.memory["weights"] == params * 2 and fsdp.memory["weights"] == params * 2 / 4
    assert ddp.memory["trainable"] == params * 6 and fsdp.memory["trainable"] == params * 6 / 4  # bf16 grads + AdamW
    tokens = 4 * 16 + 8 * 128  # one micro-batch on one GPU
    per_layer = 6 * 256 + 2 * 128 + 4 * 1024
    assert ddp.memory["activations"] == 4 * per_layer * tokens * 2
    gc = plan_config(load_config(None, big + ["trainer.strategy=ddp", "model.gradient_checkpointing=true"]),
                     query_tokens=16, doc_tokens=128)
    assert gc.memory["activations"] == (4 * 256 + per_layer) * tokens * 2


def test_paper_scale_plan_offline():
    rows = plan_file(ROOT / "sweeps" / "paper_long_document_ar.yaml")
    sizes = {r.label.split()[0]: r.arch.params for r in rows}
    # Published sizes without the LM head: Qwen2.5-7B 7.07B, Mistral-7B 7.11B, Llama-3-8B 7.50B.
    assert sizes["backbone=qwen2.5-7b"] == pytest.approx(7.07e9, rel=0.01)
    assert sizes["backbone=mistral-7b"] == pytest.approx(7.11e9, rel=0.01)
    assert sizes["backbone=llama3-8b"] == pytest.approx(7.50e9, rel=0.01)
    for r in rows:
        assert r.world == 4 and r.global_batch == 16
        assert r.memory["total"] < 0.9 * 80e9  # LoRA + checkpointing fits an 80 GB GPU
        assert not r.unknown_tasks  # LongEmbed sizes come from mteb's statistics


def test_cli_plan_and_sweep_plan_create_nothing(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "s", "base": {"output_dir": str(tmp_path / "runs"),
                                                          "eval": {"tasks": ["passkey", "beir:" + str(tmp_path)]}},
                                    "space": {"model.pooling": {"type": "categorical", "choices": ["mean", "last_token"]}}}))
    (tmp_path / "corpus.jsonl").write_text("")
    (tmp_path / "queries.jsonl").write_text("")
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    assert main(["sweep", str(spec), "--plan", "--gpu", "a100"]) == 0
    out = capsys.readouterr().out
    assert "A100 80GB (312 TFLOP/s bf16 peak) at 40% utilisation" in out
    assert "pooling=mean seed=0" in out and "pooling=last_token seed=0" in out and "total: 2 trials" in out
    assert f"evaluation not estimated (size unknown offline): beir:{tmp_path}" in out
    assert not (tmp_path / "runs").exists()
    assert main(["plan", str(spec), "--gpu", "tpu"]) == 2
    assert "--gpu 'tpu' is not known; choose one of: h100, h200, a100, l40s, cpu" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--utilization 1.5 must be in"):
        plan_config(load_config(None, BASE), utilization=1.5)
