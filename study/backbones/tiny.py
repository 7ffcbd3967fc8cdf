"""Tiny backbones built from configs: the same architectures as the 7B models, a few million parameters.

Sized so that fine-tuning and long-context evaluation fit a 2-core CPU (see
`make bench` for their throughput). Dropout is 0 everywhere: equal settings across
families, and BERT's default attention dropout pushes sdpa onto a slow path.
"""

from __future__ import annotations

HIDDEN, LAYERS, HEADS, KV_HEADS, INTERMEDIATE = 256, 4, 4, 2, 1024
MAX_POSITIONS = 32768  # RoPE decoders: the longest LongEmbed length
BERT_MAX_POSITIONS = 8192  # absolute positions cost parameters; longer documents are truncated
# Sizes, selected by a source "tiny:<family>@<size>" (default: tiny). `mini` is the default study's
# backbone: a quarter of the compute per token of `tiny`, so a 2-core CPU affords more seeds and queries.
# Its residual branches (attention and MLP output projections) start at 0.1 x their usual scale, so a
# fresh model passes each token's identity up the residual stream instead of scrambling it: mean
# pooling then starts as a bag of tokens (passkey 0.97 nDCG@1 at 256 tokens before any training, where
# the full-scale init gives 0.23; the pilot in docs/default-study.md).
SIZES = {
    "tiny": dict(hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, residual_init_scale=1.0),
    "mini": dict(hidden_size=128, intermediate_size=512, residual_init_scale=0.1),
}
RESIDUAL_OUTPUTS = ("o_proj.weight", "down_proj.weight")
FAMILIES = ("qwen2", "llama", "mistral", "qwen3", "gemma3", "embeddinggemma", "bert", "modernbert",
            "modernbert-decoder")


def scale_residual_branches(model, scale: float) -> None:
    """Multiply the output projections of every attention and MLP block by `scale` (after init)."""
    import torch

    if scale == 1.0:
        return
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(RESIDUAL_OUTPUTS):
                param.mul_(scale)


def tiny_config(family: str, tokenizer, **overrides):
    """Config of a tiny `family` model (`qwen2`, or `qwen2@mini` for another size) for `tokenizer`.

    Only the tokenizer's size and special ids are read. The config records `residual_init_scale`,
    which study.backbones.loading applies after random initialisation."""
    family, _, size = family.partition("@")
    if (size or "tiny") not in SIZES:
        raise ValueError(f"unknown tiny size {size!r}; choose one of: {', '.join(SIZES)}")
    shape = SIZES[size or "tiny"]
    overrides = {**{k: v for k, v in shape.items() if k != "residual_init_scale"}, **overrides}
    from transformers import (
        BertConfig,
        Gemma3TextConfig,
        LlamaConfig,
        MistralConfig,
        ModernBertConfig,
        ModernBertDecoderConfig,
        Qwen2Config,
        Qwen3Config,
    )

    ids = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    decoder = dict(
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=MAX_POSITIONS,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        attention_dropout=0.0,
        use_cache=False,
        **ids,
    )
    decoder.update(overrides)
    if family == "qwen2":
        cfg = Qwen2Config(**decoder)
    elif family == "llama":
        cfg = LlamaConfig(**decoder)
    elif family == "mistral":
        cfg = MistralConfig(sliding_window=None, **decoder)
    elif family == "qwen3":
        cfg = Qwen3Config(**{"head_dim": decoder["hidden_size"] // HEADS, **decoder})
    elif family == "gemma3":
        cfg = Gemma3TextConfig(**{"head_dim": decoder["hidden_size"] // HEADS, "sliding_window": MAX_POSITIONS,
                                  **decoder})
    elif family == "embeddinggemma":
        # EmbeddingGemma: Gemma3 text with its bidirectional flag (transformers halves the window to one side + 1).
        cfg = Gemma3TextConfig(**{"head_dim": decoder["hidden_size"] // HEADS, "sliding_window": 512,
                                  "use_bidirectional_attention": True, **decoder})
    elif family in ("modernbert", "modernbert-decoder"):
        # ModernBERT / Ettin: RoPE, every third layer global, the others a local window (local_attention, total).
        mb = dict(num_hidden_layers=LAYERS, num_attention_heads=HEADS, max_position_embeddings=BERT_MAX_POSITIONS,
                  local_attention=128, cls_token_id=ids["bos_token_id"], sep_token_id=ids["eos_token_id"], **ids)
        mb.update({k: v for k, v in overrides.items() if k != "head_dim"})
        cfg = ModernBertConfig(**mb) if family == "modernbert" else ModernBertDecoderConfig(use_cache=False, **mb)
    elif family == "bert":
        bert = dict(
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            max_position_embeddings=BERT_MAX_POSITIONS,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            type_vocab_size=1,
            **ids,
        )
        cfg = BertConfig(**{**bert, **{k: v for k, v in overrides.items() if k != "head_dim"}})
    else:
        raise ValueError(f"unknown tiny family {family!r}; choose one of: {', '.join(FAMILIES)}")
    cfg.residual_init_scale = shape["residual_init_scale"]
    return cfg
