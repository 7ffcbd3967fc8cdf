"""Attention direction: the one place that knows how to make a backbone causal or bidirectional.

transformers 5.x has a public switch for decoders: `config.is_causal`. With it
False, `masking_utils.create_causal_mask` builds a bidirectional (padding-only)
mask under sdpa, eager and flex attention, for left or right padding, and the
setting survives save/load. BERT-style encoders are the other way round: they
are bidirectional unless built with `config.is_decoder=True` (it must be set
before the model is constructed; flipping it later is inconsistent under sdpa).

So direction is a property of the *config*, set before the model is built, and
then proven on the built model with a causality probe: change the last token;
position 0 must change under bidirectional attention and must not under causal
attention. Setting `module.is_causal` on attention layers alone is not enough
(sdpa honours it only for unpadded batches; eager ignores it), so we never do.
Model types we have not verified raise instead of silently doing the wrong thing.

Three families need more than one flag (tests/test_architectures.py):
* ModernBERT (`modernbert`, Ettin encoders) builds bidirectional masks unconditionally; its config has no
  causal switch, and `config.is_causal=True` is a half switch (sdpa turns causal on unpadded batches only,
  eager never). So a causal ModernBERT is its weights moved into the ModernBERT decoder architecture
  (`modernbert-decoder`, Ettin decoders; study/backbones/modernbert.py), whose masks honour is_causal.
* `modernbert-decoder` under eager attention crashes when a bidirectional mask is all ones (transformers
  skips the mask, its eager code adds None), so that combination is refused (`check_implementation`).
* Gemma3 with `use_bidirectional_attention` (EmbeddingGemma) adds full attention on top of whatever mask
  is_causal selects, so its causal arm turns the flag off (and undoes the window halving the flag did).
"""

from __future__ import annotations

import torch

ATTENTIONS = ("bidirectional", "causal")  # model.attention
# Decoders whose attention masks come from transformers.masking_utils (config.is_causal works).
DECODER_TYPES = frozenset({"qwen2", "qwen3", "llama", "mistral", "gemma3", "gemma3_text", "smollm3",
                           "modernbert-decoder"})
# Encoders with BERT's `is_decoder` switch, and ModernBERT (bidirectional only; causal via its decoder class).
ENCODER_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "modernbert"})
SUPPORTED = DECODER_TYPES | ENCODER_TYPES


class UnsupportedBackbone(ValueError):
    pass


class AttentionMismatch(RuntimeError):
    pass


def family(config) -> str:
    """'decoder' or 'encoder'; raises for model types this module has not verified."""
    model_type = getattr(config, "model_type", None)
    if model_type in DECODER_TYPES:
        return "decoder"
    if model_type in ENCODER_TYPES:
        return "encoder"
    raise UnsupportedBackbone(
        f"model_type {model_type!r} is not supported for attention switching; supported: {', '.join(sorted(SUPPORTED))}. "
        "Add it to study/backbones/attention.py together with a causality-probe test."
    )


def set_attention(config, attention: str) -> None:
    """Set the attention direction on a config, before the model is constructed."""
    if attention not in ATTENTIONS:
        raise ValueError(f"attention={attention!r}; choose one of: {', '.join(ATTENTIONS)}")
    causal = attention == "causal"
    for sub in _configs(config):
        if sub.model_type == "modernbert":
            if causal:
                raise UnsupportedBackbone(
                    "a ModernBERT encoder (model_type 'modernbert') has no causal mask switch in transformers; "
                    "load it with study.backbones.loading.load_backbone, which runs its weights in the ModernBERT decoder "
                    "architecture (study/backbones/modernbert.py)")
        elif getattr(sub, "use_bidirectional_attention", False):  # EmbeddingGemma: the flag is its own switch
            if causal:
                sub.use_bidirectional_attention = False
                sub.sliding_window = (sub.sliding_window - 1) * 2  # the checkpoint's causal window (config to_dict)
                sub.is_causal = True
            else:  # is_causal=False would widen its local window by one token (a second overlay)
                sub.__dict__.pop("is_causal", None)
        elif family(sub) == "decoder":
            sub.is_causal = causal
        else:
            sub.is_decoder = causal
            sub.add_cross_attention = False


def configured_attention(config) -> str:
    """The direction `set_attention` put on a config: 'causal' or 'bidirectional' (decoders default to causal)."""
    sub = _configs(config)[-1]
    if sub.model_type == "modernbert" or getattr(sub, "use_bidirectional_attention", False):
        return "bidirectional"  # no causal switch (ModernBERT) / the flag overrides is_causal (EmbeddingGemma)
    causal = getattr(sub, "is_causal", None) is not False if family(sub) == "decoder" else sub.is_decoder
    return "causal" if causal else "bidirectional"


def check_implementation(config, attention: str, attn_implementation: str) -> None:
    """Refuse a direction/implementation pair transformers computes wrongly or not at all."""
    if (getattr(config, "model_type", None) == "modernbert-decoder" and attention == "bidirectional"
            and attn_implementation == "eager"):
        raise UnsupportedBackbone(
            "model.attn_implementation='eager' with model.attention='bidirectional' fails for model_type "
            "'modernbert-decoder' (transformers skips an all-ones bidirectional mask and its eager code needs one); "
            "use model.attn_implementation=sdpa")


def _configs(config) -> list:
    # Multimodal wrappers (gemma3) keep the language model's config in text_config.
    text = getattr(config, "text_config", None)
    return [config, text] if text is not None and text is not config else [config]


@torch.no_grad()
def probe_attention(model, vocab_size: int, length: int = 8) -> str:
    """Measure the direction a built model really uses: 'bidirectional' or 'causal'."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    low = min(16, vocab_size // 2)
    ids = torch.randint(low, vocab_size, (1, length), generator=gen)
    changed = ids.clone()
    changed[0, -1] = low + (int(ids[0, -1]) - low + 1) % (vocab_size - low)
    batch = torch.cat([ids, changed]).to(device)
    hidden = model(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state.float()
    model.train(was_training)
    delta = (hidden[0, 0] - hidden[1, 0]).abs().max().item()
    scale = hidden[:, 0].abs().max().item() + 1e-12
    return "bidirectional" if delta > 1e-4 * scale else "causal"


def verify_attention(model, vocab_size: int, expected: str, what: str = "the backbone") -> None:
    """Refuse to run if the requested direction is not what the model does."""
    measured = probe_attention(model, vocab_size)
    if measured != expected:
        raise AttentionMismatch(
            f"model.attention={expected!r} was requested but {what}'s attention is {measured} "
            "(causality probe: changing the last token "
            f"{'did not change' if measured == 'causal' else 'changed'} position 0). "
            "The backbone's remote code or config may ignore the attention switch."
        )
