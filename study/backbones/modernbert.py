"""A causal ModernBERT encoder: its weights in the ModernBERT decoder architecture.

`ModernBertModel` (model_type `modernbert`: ModernBERT, the Ettin encoders) always builds bidirectional
masks and has no config switch for causal attention (study/backbones/attention.py). `ModernBertDecoderModel`
(model_type `modernbert-decoder`: the Ettin decoders) is the same network - embeddings with LayerNorm,
pre-norm layers (layer 0 without attention norm), GeGLU MLP `Wi`/`Wo`, RoPE with a global and a local theta,
the same global/local layer pattern and window - except that it stores the fused `Wqkv` projection as
`q_proj`/`k_proj`/`v_proj`, and it builds its masks with masking_utils, which honour `config.is_causal`.
So the encoder's weights, with `Wqkv` split in three, run causally there. tests/test_architectures.py checks
that the moved model with `is_causal=False` reproduces the encoder's hidden states (padding included).
"""

from __future__ import annotations

import dataclasses


def as_decoder(encoder, causal: bool = True):
    """A ModernBertDecoderModel holding `encoder`'s (ModernBertModel) weights, with the given direction."""
    from transformers import ModernBertDecoderConfig, ModernBertDecoderModel

    src = encoder.config
    shared = {f.name for f in dataclasses.fields(ModernBertDecoderConfig)} & set(src.to_dict())
    fields = {k: v for k, v in src.to_dict().items() if k in shared and k not in ("model_type", "architectures")}
    config = ModernBertDecoderConfig(**{**fields, "use_cache": False})
    config.layer_types = list(src.layer_types)  # the encoder's pattern, whatever its checkpoint wrote
    config.sliding_window = src.sliding_window  # the half window; both classes mask |i - j| <= it bidirectionally
    config.is_causal = causal
    config._attn_implementation = src._attn_implementation
    decoder = ModernBertDecoderModel(config).to(next(encoder.parameters()).dtype)
    state = {}
    for name, value in encoder.state_dict().items():
        if ".attn.Wqkv." in name:  # rows are [q; k; v], each heads x head_dim (ModernBertAttention.forward)
            for proj, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                state[name.replace("Wqkv", proj)] = part
        else:
            state[name] = value
    decoder.load_state_dict(state, strict=True)  # every weight moved, none left over
    return decoder.train(encoder.training)
