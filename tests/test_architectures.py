"""ModernBERT/Ettin (encoder and decoder), EmbeddingGemma and Qwen3-Embedding on tiny random configs of their
architectures: the attention switch both ways (causality probe, padding, local windows), pooling, one training
step, registry names; and the causal arm of the diffusion stand-ins (Dream/LLaDA as native models)."""

from __future__ import annotations

import pytest
import torch
from remote_standins import dream_checkpoint, llada_checkpoint
from test_attention import pad_batch, real_positions
from transformers import AutoModel

from study.backbones.attention import UnsupportedBackbone, check_implementation, probe_attention, set_attention
from study.backbones.loading import load_backbone
from study.backbones.modernbert import as_decoder
from study.backbones.registry import resolve_backbone
from study.backbones.tiny import tiny_config
from study.config import load_config
from study.inference import eval_builder
from study.losses import InfoNCE
from study.model import build_embedder

# Small local windows, so that sequences of 20 tokens cross them: ModernBERT's local_attention is the whole
# window (half on each side); EmbeddingGemma's sliding_window the checkpoint's value (transformers halves it).
SMALL = {
    "modernbert": dict(num_hidden_layers=3, local_attention=8),
    "modernbert-decoder": dict(num_hidden_layers=3, local_attention=8),
    "embeddinggemma": dict(num_hidden_layers=2, head_dim=16, sliding_window=8,
                           layer_types=["sliding_attention", "full_attention"]),
}
# tiny-qwen3 stands in for Qwen3-Embedding (plain Qwen3 weights, used causal with last-token pooling).
TINY_NAMES = ["tiny-modernbert", "tiny-modernbert-decoder", "tiny-embeddinggemma", "tiny-qwen3"]


def build(family, attention, impl, tokenizer, **extra):
    """The model load_backbone builds, at a test size (a causal ModernBERT encoder runs as its decoder class)."""
    cfg = tiny_config(family, tokenizer, hidden_size=64, intermediate_size=128, **{**SMALL[family], **extra})
    via_decoder = family == "modernbert" and attention == "causal"
    set_attention(cfg, "bidirectional" if via_decoder else attention)
    torch.manual_seed(0)
    model = AutoModel.from_config(cfg, attn_implementation=impl).eval()
    return as_decoder(model, causal=True).eval() if via_decoder else model


def mcfg(*overrides):
    return load_config(overrides=list(overrides)).model


# ----------------------------------------------------------------- attention switch


@pytest.mark.parametrize("family", list(SMALL))
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
def test_causality_probe_and_padding_invariance(family, impl, side, attention, fake_tokenizer):
    if family == "modernbert-decoder" and impl == "eager" and attention == "bidirectional":
        pytest.skip("refused: transformers' eager path crashes on an unpadded bidirectional mask (test below)")
    model = build(family, attention, impl, fake_tokenizer)
    g = torch.Generator().manual_seed(1)
    seq = torch.randint(10, 500, (20,), generator=g).tolist()
    changed = seq[:-1] + [(seq[-1] + 7) % 490 + 10]
    short = seq[:12]
    ids, mask = pad_batch([seq, changed, short], side)
    with torch.no_grad():
        h = model(input_ids=ids, attention_mask=mask).last_hidden_state
        alone = model(input_ids=torch.tensor([short]), attention_mask=torch.ones(1, 12, dtype=torch.long)).last_hidden_state
    first = [real_positions(mask[i])[0] for i in range(3)]
    delta0 = (h[0, first[0]] - h[1, first[1]]).abs().max().item()
    if attention == "bidirectional":
        assert delta0 > 1e-3, "position 0 must see the last token under bidirectional attention"
    else:
        assert delta0 < 1e-5, "position 0 must not see later tokens under causal attention"
    deltas = (h[0, real_positions(mask[0])] - h[1, real_positions(mask[1])]).abs().amax(-1)
    assert (deltas[:-1] > 1e-3).all() if attention == "bidirectional" else (deltas[:-1] < 1e-5).all()
    torch.testing.assert_close(h[2, real_positions(mask[2])], alone[0], atol=2e-5, rtol=1e-4)
    assert probe_attention(model, len(fake_tokenizer), length=20) == attention


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_modernbert_in_decoder_class_computes_the_encoder(impl, side, fake_tokenizer):
    """The causal route is faithful: the encoder's weights in the decoder class, with is_causal=False,
    give the encoder's hidden states (local windows crossed, padding included); every weight is moved."""
    encoder = build("modernbert", "bidirectional", impl, fake_tokenizer)
    moved = as_decoder(encoder, causal=False).eval()
    assert type(moved).__name__ == "ModernBertDecoderModel"
    assert sum(p.numel() for p in moved.parameters()) == sum(p.numel() for p in encoder.parameters())
    g = torch.Generator().manual_seed(2)
    ids, mask = pad_batch([torch.randint(10, 500, (n,), generator=g).tolist() for n in (20, 13)], side)
    with torch.no_grad():
        want = encoder(input_ids=ids, attention_mask=mask).last_hidden_state[mask.bool()]
        got = moved(input_ids=ids, attention_mask=mask).last_hidden_state[mask.bool()]
    assert want.abs().max() > 0.1
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def reach(model, src: int, dst: int) -> bool:
    """Whether changing token `src` changes the final state at `dst` (12 random tokens, no padding)."""
    ids = torch.randint(10, 500, (1, 12), generator=torch.Generator().manual_seed(3))
    changed = ids.clone()
    changed[0, src] = (ids[0, src] + 7) % 490 + 10
    with torch.no_grad():
        h = model(input_ids=torch.cat([ids, changed]), attention_mask=torch.ones(2, 12, dtype=torch.long))[0]
    return (h[0, dst] - h[1, dst]).abs().max().item() > 1e-5


def test_modernbert_local_window_is_the_encoders_in_both_directions(fake_tokenizer):
    """One local layer, local_attention=8: bidirectional sees 4 tokens each side (position 0 is reached from
    position 4, not 5); causal, as the Ettin decoders, 4 tokens up to itself (position 8 from 5, not 4)."""
    one_local = dict(num_hidden_layers=1, layer_types=["sliding_attention"])
    bidir = build("modernbert", "bidirectional", "sdpa", fake_tokenizer, **one_local)
    assert reach(bidir, 4, 0) and not reach(bidir, 5, 0)
    causal = build("modernbert", "causal", "sdpa", fake_tokenizer, **one_local)
    assert reach(causal, 5, 8) and not reach(causal, 4, 8) and not reach(causal, 9, 8)


def test_embeddinggemma_window_native_when_bidirectional_and_restored_when_causal(fake_tokenizer):
    """EmbeddingGemma's flag halves the checkpoint's window (8 -> |i-j| < 5). Bidirectional keeps exactly that
    (is_causal=False would add a second, one-token-wider overlay); causal turns the flag off and looks back 8."""
    one_local = dict(num_hidden_layers=1, layer_types=["sliding_attention"])
    bidir = build("embeddinggemma", "bidirectional", "sdpa", fake_tokenizer, **one_local)
    assert bidir.config.use_bidirectional_attention and bidir.config.sliding_window == 5
    assert reach(bidir, 4, 0) and not reach(bidir, 5, 0)
    causal = build("embeddinggemma", "causal", "sdpa", fake_tokenizer, **one_local)
    assert not causal.config.use_bidirectional_attention and causal.config.sliding_window == 8
    assert reach(causal, 1, 8) and not reach(causal, 0, 8) and not reach(causal, 5, 4)
    # Without the fix (is_causal alone), the flag's overlay keeps the model bidirectional: the probe sees it.
    cfg = tiny_config("embeddinggemma", fake_tokenizer, hidden_size=64, intermediate_size=128, **SMALL["embeddinggemma"])
    cfg.is_causal = True
    assert probe_attention(AutoModel.from_config(cfg), len(fake_tokenizer)) == "bidirectional"


def test_directions_survive_save_and_load(tmp_path, fake_tokenizer):
    for family, attention in [("modernbert", "causal"), ("embeddinggemma", "causal"),
                              ("embeddinggemma", "bidirectional"), ("modernbert-decoder", "bidirectional")]:
        folder = tmp_path / f"{family}-{attention}"
        model = build(family, attention, "sdpa", fake_tokenizer)
        model.save_pretrained(folder)
        reloaded = AutoModel.from_pretrained(folder).eval()
        assert probe_attention(reloaded, len(fake_tokenizer)) == attention
        assert getattr(reloaded.config, "sliding_window", None) == getattr(model.config, "sliding_window", None)


def test_refusals_name_the_reason(fake_tokenizer):
    with pytest.raises(UnsupportedBackbone, match="'modernbert'.*no causal mask switch"):
        set_attention(tiny_config("modernbert", fake_tokenizer), "causal")
    decoder = tiny_config("modernbert-decoder", fake_tokenizer)
    with pytest.raises(UnsupportedBackbone, match="eager.*bidirectional.*modernbert-decoder.*sdpa"):
        check_implementation(decoder, "bidirectional", "eager")
    check_implementation(decoder, "causal", "eager")
    check_implementation(decoder, "bidirectional", "sdpa")
    with pytest.raises(UnsupportedBackbone, match="attn_implementation=sdpa"):
        load_backbone(mcfg("model.backbone=tiny-modernbert-decoder", "model.attention=bidirectional",
                           "model.attn_implementation=eager"))


# ----------------------------------------------------------------- through load_backbone: pooling, training


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def embedder_for(name, attention, pooling="mean", *extra):
    cfg = load_config(overrides=[f"model.backbone={name}", f"model.attention={attention}", f"model.pooling={pooling}",
                                 "eval.max_length=64", *extra])
    torch.manual_seed(0)
    backbone = load_backbone(cfg.model, seed=0)  # runs the causality probe: refuses a wrong direction
    return build_embedder(backbone, cfg.model), eval_builder(cfg, backbone), backbone


TEXTS = ["a short text", "a somewhat longer text about the word and its meaning", "one more, of middling length"]


@pytest.mark.parametrize("name", TINY_NAMES)
@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
def test_load_switch_and_pool(name, attention, one_thread):
    _, _, backbone = embedder_for(name, attention)
    expected_type = {"tiny-modernbert": "modernbert", "tiny-modernbert-decoder": "modernbert-decoder",
                     "tiny-embeddinggemma": "gemma3_text", "tiny-qwen3": "qwen3"}[name]
    if name == "tiny-modernbert" and attention == "causal":
        expected_type = "modernbert-decoder"  # the encoder's weights in the decoder class
    assert backbone.model.config.model_type == expected_type
    assert (backbone.family, backbone.padding_side) == (
        ("encoder", "right") if expected_type == "modernbert" else ("decoder", "left"))
    assert probe_attention(backbone.model, len(backbone.tokenizer)) == attention
    poolings = ["mean", "last_token"] + (["mask_tokens"] if attention == "bidirectional" else [])
    for pooling in poolings:  # one backbone, each pooling's embedder and inputs
        cfg = load_config(overrides=[f"model.backbone={name}", f"model.attention={attention}",
                                     f"model.pooling={pooling}", "eval.max_length=64",
                                     *(["model.mask_tokens=2"] if pooling == "mask_tokens" else [])])
        embedder, builder = build_embedder(backbone, cfg.model).eval(), eval_builder(cfg, backbone)
        with torch.no_grad():
            batch = embedder(builder(TEXTS))
            alone = torch.cat([embedder(builder([t])) for t in TEXTS])
        assert batch.shape == (3, backbone.hidden_size) and torch.isfinite(batch).all()
        torch.testing.assert_close(batch, alone, atol=2e-5, rtol=1e-4)  # padding changes nothing


@pytest.mark.parametrize("name", TINY_NAMES)
@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
def test_one_training_step_lowers_the_loss(name, attention, one_thread):
    pooling = "mean" if attention == "bidirectional" else "last_token"
    embedder, builder, _ = embedder_for(name, attention, pooling)
    _train_step_lowers_loss(embedder, builder)


def _train_step_lowers_loss(embedder, builder):
    queries = ["what is a cat", "where is the river", "who wrote the letter", "why is the sky dark"]
    docs = ["a cat is a small animal", "the river runs by the town", "she wrote the letter", "night makes it dark"]
    before = {n: p.detach().clone() for n, p in embedder.named_parameters()}
    opt = torch.optim.AdamW(embedder.parameters(), lr=1e-4)
    loss_fn = InfoNCE(0.05, gather=False)
    embedder.train()
    losses = []
    for _ in range(2):
        loss = loss_fn(embedder(builder(queries)), embedder(builder(docs)))
        losses.append(loss.item())
        if len(losses) == 2:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[1] < losses[0], losses
    changed = [n for n, p in embedder.named_parameters() if not torch.equal(p, before[n])]
    assert any("layers.0." in n for n in changed) and any("embed" in n for n in changed)


def test_lora_targets_modernbert_layers(one_thread):
    for attention in ("bidirectional", "causal"):
        bb = load_backbone(mcfg("model.backbone=tiny-modernbert", f"model.attention={attention}", "model.lora.r=4"))
        lora = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in bb.model.named_parameters() if "lora_A" in n}
        assert lora == ({"Wqkv", "Wo", "Wi"} if attention == "bidirectional" else {"q_proj", "k_proj", "v_proj", "Wo", "Wi"})


# ----------------------------------------------------------------- registry (names only, no download)


@pytest.mark.parametrize("name, hub_id", [
    *[(f"ettin-{k}-{s}", f"jhu-clsp/ettin-{k}-{s}") for k in ("encoder", "decoder")
      for s in ("17m", "32m", "68m", "150m", "400m", "1b")],
    ("modernbert-base", "answerdotai/ModernBERT-base"), ("modernbert-large", "answerdotai/ModernBERT-large"),
    ("qwen3-embedding-0.6b", "Qwen/Qwen3-Embedding-0.6B"), ("qwen3-embedding-4b", "Qwen/Qwen3-Embedding-4B"),
    ("qwen3-embedding-8b", "Qwen/Qwen3-Embedding-8B"), ("embeddinggemma-300m", "google/embeddinggemma-300m"),
])
def test_registered_names_resolve_to_hub_ids(name, hub_id):
    spec = resolve_backbone(name)
    assert spec.source == hub_id and resolve_backbone(hub_id) == spec
    if name.startswith("qwen3-embedding"):
        assert (spec.padding_side, spec.natural) == ("left", "causal, last_token")
    if name == "embeddinggemma-300m":
        assert spec.natural == "bidirectional, mean"


def test_example_command_config_validates_offline():
    """`study eval model.backbone=ettin-encoder-17m model.encoding=chunked tasks=[passkey,needle]` passes validation
    (the download itself needs hub access)."""
    from study.run_eval import resolve

    mode, cfg, _ = resolve(None, ["model.backbone=ettin-encoder-17m", "model.encoding=chunked", "tasks=[passkey,needle]"])
    assert mode == "model" and cfg.model.backbone == "ettin-encoder-17m"
    assert list(cfg.eval.tasks) == ["passkey", "needle"]


def test_backbones_listing_shows_natural_settings(capsys):
    from study.cli import main

    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    assert "ettin-decoder-1b" in out and "jhu-clsp/ettin-decoder-1b" in out
    assert "qwen3-embedding-0.6b" in out and "[natural: causal, last_token]" in out


# ----------------------------------------------------------------- diffusion backbones: the causal arm


@pytest.mark.parametrize("kind", ["dream", "llada"])
def test_diffusion_standin_causal_arm_loads_probes_and_trains(kind, tmp_path, one_thread):
    """Dream/LLaDA load as native Qwen2/Llama (their remote code is hard-wired bidirectional): model.attention=causal
    is set, proven by the probe at load time, and trains like any other arm."""
    {"dream": dream_checkpoint, "llada": llada_checkpoint}[kind](tmp_path)
    cfg = load_config(overrides=[f"model.backbone={tmp_path}", "model.attention=causal", "model.pooling=last_token",
                                 "eval.max_length=64"])
    backbone = load_backbone(cfg.model)  # verify=True: the probe refuses a mismatch
    assert backbone.model.config.native_mapping == kind and backbone.model.config.is_causal is True
    assert probe_attention(backbone.model, len(backbone.tokenizer)) == "causal"
    _train_step_lowers_loss(build_embedder(backbone, cfg.model), eval_builder(cfg, backbone))
