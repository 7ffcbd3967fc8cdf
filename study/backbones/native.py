"""Dream and LLaDA as native transformers architectures instead of their remote code.

Both diffusion LMs ship modelling code written for transformers 4.46 (`auto_map`
in config.json), which this project's transformers 5.x may not run, and which
hard-wires bidirectional attention (the study's attention switch cannot reach
it). Their weights are plain decoder weights, so we load them into native
classes, where `config.is_causal` (study.backbones.attention) works as for
every other decoder:

* Dream-v0 (config model_type "Dream") is Qwen2.5's layout under Qwen2's own
  names (`model.embed_tokens`, `model.layers.N.self_attn.q_proj`, ...,
  `lm_head`): a Qwen2Config built from its fields is all it takes.
* LLaDA (model_type "llada") is Llama (RMSNorm, SwiGLU, RoPE, no biases) under
  OLMo names: `model.transformer.{wte, blocks.N.*, ln_f, ff_out}`. Its block
  computes `ff_out(silu(ff_proj(x)) * up_proj(x))`, so ff_proj is Llama's
  gate_proj and ff_out (inside a block) its down_proj; the top-level ff_out is
  the LM head. We build a LlamaConfig and rename keys while loading
  (`from_pretrained(key_mapping=...)`, so shards stream as for any model).

Loading refuses a checkpoint that leaves any native weight missing or brings
a weight we do not know (other than the LM head, unused for embeddings), and a
config whose options the native class cannot express. `study verify-backbone`
compares this load with the model's own remote code on a GPU with hub access.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from study.backbones.attention import UnsupportedBackbone

log = logging.getLogger(__name__)

# model_type in the checkpoint's config.json -> our mapping
NATIVE_TYPES = {"Dream": "dream", "dream": "dream", "llada": "llada"}
# Checkpoint keys that a base model (no LM head) legitimately leaves unused.
LM_HEAD_KEYS = {"dream": {"lm_head.weight"}, "llada": {"lm_head.weight"}}

_B = r"^model\.transformer\.blocks\.(\d+)\."
LLADA_KEY_MAPPING = {
    r"^model\.transformer\.wte\.": "model.embed_tokens.",
    r"^model\.transformer\.ln_f\.": "model.norm.",
    r"^model\.transformer\.ff_out\.": "lm_head.",
    _B + r"attn_norm\.": r"model.layers.\1.input_layernorm.",
    _B + r"ff_norm\.": r"model.layers.\1.post_attention_layernorm.",
    _B + r"q_proj\.": r"model.layers.\1.self_attn.q_proj.",
    _B + r"k_proj\.": r"model.layers.\1.self_attn.k_proj.",
    _B + r"v_proj\.": r"model.layers.\1.self_attn.v_proj.",
    _B + r"attn_out\.": r"model.layers.\1.self_attn.o_proj.",
    _B + r"ff_proj\.": r"model.layers.\1.mlp.gate_proj.",
    _B + r"up_proj\.": r"model.layers.\1.mlp.up_proj.",
    _B + r"ff_out\.": r"model.layers.\1.mlp.down_proj.",
}

_DREAM_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling",
    "tie_word_embeddings", "attention_dropout", "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range",
)
# LLaDA options the Llama layout expresses, with the only values it can take.
_LLADA_REQUIRED = {
    "block_type": ("llama",), "activation_type": ("silu",), "layer_norm_type": ("rms",), "rope": (True,),
    "alibi": (False, None), "attention_layer_norm": (False, None), "include_bias": (False, None),
    "include_qkv_bias": (False, None), "input_emb_norm": (False, None), "block_group_size": (1, None),
    "layer_norm_with_affine": (True, None), "bias_for_layer_norm": (False, None),
}


def read_config_json(source: str) -> dict | None:
    """The checkpoint's raw config.json (local folder or hub id); None when it cannot be read."""
    path = Path(source).expanduser()
    if path.is_dir():
        file = path / "config.json"
        return json.loads(file.read_text()) if file.is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(source, "config.json")).read_text())
    except Exception:  # offline, gated or missing: the ordinary loading path reports it
        return None


def mapping_kind(raw: dict | None) -> str | None:
    """'dream', 'llada' or None (not a checkpoint we map)."""
    return NATIVE_TYPES.get((raw or {}).get("model_type"))


def native_config(raw: dict):
    """The native transformers config (Qwen2Config / LlamaConfig) for a Dream or LLaDA config.json."""
    kind = mapping_kind(raw)
    if kind == "dream":
        from transformers import Qwen2Config

        cfg = Qwen2Config(**{k: raw[k] for k in _DREAM_FIELDS if k in raw and raw[k] is not None},
                          use_sliding_window=False, use_cache=False)
    elif kind == "llada":
        from transformers import LlamaConfig

        bad = {k: raw[k] for k, ok in _LLADA_REQUIRED.items() if k in raw and raw[k] not in ok}
        if bad:
            raise UnsupportedBackbone(
                f"LLaDA config options {bad} have no native Llama equivalent (supported: "
                f"{ {k: v[0] for k, v in _LLADA_REQUIRED.items()} }); load it with model.trust_remote_code=true"
            )
        d_model, n_heads = raw["d_model"], raw["n_heads"]
        cfg = LlamaConfig(
            vocab_size=raw.get("embedding_size") or raw["vocab_size"],
            hidden_size=d_model,
            intermediate_size=raw.get("mlp_hidden_size") or raw.get("mlp_ratio", 4) * d_model,
            num_hidden_layers=raw["n_layers"],
            num_attention_heads=n_heads,
            num_key_value_heads=raw.get("n_kv_heads") or n_heads,
            head_dim=d_model // n_heads,
            max_position_embeddings=raw.get("max_sequence_length", 4096),
            rms_norm_eps=raw.get("rms_norm_eps", 1e-5),
            rope_theta=raw.get("rope_theta", 10000.0),
            attention_bias=False,
            mlp_bias=False,
            hidden_act="silu",
            attention_dropout=0.0,
            tie_word_embeddings=bool(raw.get("weight_tying", False)),
            pad_token_id=raw.get("pad_token_id"),
            eos_token_id=raw.get("eos_token_id"),
            bos_token_id=raw.get("bos_token_id"),
            use_cache=False,
        )
    else:
        raise ValueError(f"model_type {raw.get('model_type')!r} has no native mapping; mapped: {sorted(NATIVE_TYPES)}")
    cfg.mask_token_id = raw.get("mask_token_id")
    cfg.native_mapping = kind  # recorded in the saved config: where these weights came from
    return cfg


def load_native(source: str, config, **kwargs) -> nn.Module:
    """The native base model (no LM head) with the checkpoint's weights; refuses any mismatch."""
    from transformers import AutoModel

    kind = config.native_mapping
    mapping = LLADA_KEY_MAPPING if kind == "llada" else None
    model, info = AutoModel.from_pretrained(
        source, config=config, key_mapping=mapping, output_loading_info=True, **kwargs
    )
    check_loading_info(info, kind, source)
    return model


def check_loading_info(info: dict, kind: str, source: str) -> None:
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(set(info.get("unexpected_keys") or []) - LM_HEAD_KEYS[kind])
    mismatched = sorted(info.get("mismatched_keys") or [])
    if missing or unexpected or mismatched:
        raise UnsupportedBackbone(
            f"{source}: the {kind} -> native mapping does not fit this checkpoint "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]}, mismatched {mismatched[:5]}); "
            "load it with model.trust_remote_code=true or report the checkpoint"
        )


def load_tokenizer(source: str, kind: str | None):
    """The checkpoint's tokenizer, without its remote code.

    Dream names its own tokenizer class (tokenization_dream.py, a copy of Qwen2's BPE
    tokenizer). When transformers cannot build the named class without remote code,
    tokenizer.json is read as is (PreTrainedTokenizerFast), or, without one, the
    vocab/merges files as Qwen2's.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Tokenizer

    # AutoTokenizer reads config.json to guess a class, and warns that "llada"/"Dream" are unknown types.
    quiet = logging.getLogger("transformers.configuration_utils")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:  # trust_remote_code=False: refuse the tokenizer's remote code without prompting on a terminal
        return AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except (ValueError, OSError, AttributeError, KeyError) as first:
        for cls in (PreTrainedTokenizerFast, Qwen2Tokenizer):
            try:
                tokenizer = cls.from_pretrained(source)
            except (ValueError, OSError, TypeError):
                continue
            log.info("%s tokenizer of %s needs remote code (%s); read its files as %s", kind, source, first, cls.__name__)
            return tokenizer
        raise
    finally:
        quiet.setLevel(level)


# ----------------------------------------------------------------- remote code (opt-in)


class HiddenStates(nn.Module):
    """Adapts a remote-code LM (returns logits + hidden_states) to `.last_hidden_state`, as the study reads it."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm
        self.config = lm.config

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        from transformers.modeling_outputs import BaseModelOutput

        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, **kwargs)
        return BaseModelOutput(last_hidden_state=out.hidden_states[-1])

    def gradient_checkpointing_enable(self, **kwargs):
        self.lm.gradient_checkpointing_enable(**kwargs)

    def save_pretrained(self, *args, **kwargs):
        self.lm.save_pretrained(*args, **kwargs)


def load_remote(source: str, dtype=None, **ignored) -> nn.Module:
    """The checkpoint's own modelling code (trust_remote_code), returning `.last_hidden_state`.

    model.attn_implementation is not passed on: the remote code picks its own attention
    (LLaDA's declares no sdpa support and would be refused).
    """
    from transformers import AutoModel

    log.warning("loading %s with its own remote code (trust_remote_code=True)", source)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    return HiddenStates(AutoModel.from_pretrained(source, trust_remote_code=True, **kwargs))


# ----------------------------------------------------------------- verification


@torch.no_grad()
def last_hidden(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Last hidden states (fp32, on CPU) for an unpadded batch: LLaDA's remote code ignores attention masks."""
    device = next(model.parameters()).device
    ids = input_ids.to(device)
    return model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state.float().cpu()


def compare_hidden(ha: torch.Tensor, hb: torch.Tensor) -> dict:
    if ha.shape != hb.shape:
        raise AssertionError(f"hidden-state shapes differ: {tuple(ha.shape)} vs {tuple(hb.shape)}")
    diff = (ha - hb).abs().max().item()
    scale = max(ha.abs().max().item(), 1e-12)
    cosine = torch.nn.functional.cosine_similarity(ha, hb, dim=-1).min().item()
    finite = bool(ha.isfinite().all() and hb.isfinite().all())
    return {"max_abs_diff": diff, "max_abs_value": scale, "relative": diff / scale, "min_cosine": cosine,
            "finite": finite}


def hidden_state_difference(a: nn.Module, b: nn.Module, input_ids: torch.Tensor) -> dict:
    """Max abs difference (and min per-token cosine) of two models' last hidden states on the same input."""
    return compare_hidden(last_hidden(a, input_ids), last_hidden(b, input_ids))
