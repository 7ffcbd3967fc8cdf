"""Tiny backbones built from configs: the same architectures as the 7B models, a few million parameters.

Sized so that fine-tuning and long-context evaluation fit a 2-core CPU (see
`make bench` for their throughput). Dropout is 0 everywhere: equal settings across
families, and BERT's default attention dropout pushes sdpa onto a slow path.
"""

from __future__ import annotations

HIDDEN, LAYERS, HEADS, KV_HEADS, INTERMEDIATE = 256, 4, 4, 2, 1024
MAX_POSITIONS = 32768  # RoPE decoders: the longest LongEmbed length
BERT_MAX_POSITIONS = 8192  # absolute positions cost parameters; longer documents are truncated


def tiny_config(family: str, tokenizer, **overrides):
    """Config of a tiny `family` model for `tokenizer` (only its size and special ids are read)."""
    from transformers import BertConfig, Gemma3TextConfig, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

    ids = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    decoder = dict(
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        intermediate_size=INTERMEDIATE,
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
        cfg = Qwen3Config(**{"head_dim": HIDDEN // HEADS, **decoder})
    elif family == "gemma3":
        cfg = Gemma3TextConfig(**{"head_dim": HIDDEN // HEADS, "sliding_window": MAX_POSITIONS, **decoder})
    elif family == "bert":
        bert = dict(
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=INTERMEDIATE,
            max_position_embeddings=BERT_MAX_POSITIONS,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            type_vocab_size=1,
            **ids,
        )
        cfg = BertConfig(**{**bert, **{k: v for k, v in overrides.items() if k != "head_dim"}})
    else:
        raise ValueError(f"unknown tiny family {family!r}; choose one of: qwen2, llama, mistral, qwen3, gemma3, bert")
    return cfg
