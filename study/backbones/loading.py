"""Load a backbone + tokenizer, set its attention direction, LoRA and checkpointing, and prove the direction."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from study.backbones.attention import family as model_family
from study.backbones.attention import set_attention, verify_attention
from study.backbones.registry import BackboneSpec, resolve_backbone

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Backbone:
    name: str
    model: nn.Module  # returns .last_hidden_state
    tokenizer: object
    family: str  # "decoder" | "encoder"
    padding_side: str  # "left" | "right"
    hidden_size: int
    max_positions: int | None
    info: dict = field(default_factory=dict)


def load_backbone(mcfg, seed: int = 0, verify: bool = True) -> Backbone:
    """Build the backbone described by `model.*` config keys."""
    spec = resolve_backbone(mcfg.backbone)
    if spec.is_tiny:
        from study.backbones.tiny import tiny_config
        from study.backbones.tokenizer import tiny_tokenizer

        tokenizer = tiny_tokenizer()
        config = tiny_config(spec.source.split(":", 1)[1], tokenizer)
    else:
        config, tokenizer = _pretrained_config_and_tokenizer(spec, mcfg)
    fam = model_family(config)
    set_attention(config, mcfg.attention)
    model = _build_model(spec, config, mcfg, seed)
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    if tokenizer.pad_token_id is None:
        # Llama/Mistral tokenizers have no pad token; padded positions are masked anyway.
        tokenizer.pad_token = tokenizer.eos_token
    if mcfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if mcfg.lora.r > 0:
        model = _apply_lora(model, mcfg.lora)
    if verify:
        verify_attention(model, len(tokenizer), mcfg.attention)
    padding_side = mcfg.padding_side if mcfg.padding_side != "auto" else spec.padding_side
    if padding_side == "auto":
        # Decoders pad on the left (the paper's setting); absolute-position encoders must pad right.
        padding_side = "left" if fam == "decoder" else "right"
    text_cfg = getattr(config, "text_config", None) or config
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Backbone(
        name=mcfg.backbone,
        model=model,
        tokenizer=tokenizer,
        family=fam,
        padding_side=padding_side,
        hidden_size=text_cfg.hidden_size,
        max_positions=getattr(text_cfg, "max_position_embeddings", None),
        info={"source": spec.source, "model_type": config.model_type, "params": n_params, "trainable_params": n_train},
    )


def _pretrained_config_and_tokenizer(spec: BackboneSpec, mcfg):
    from transformers import AutoConfig, AutoTokenizer

    if mcfg.trust_remote_code:
        log.warning("model.trust_remote_code=true: running code shipped with %s", spec.source)
    config = AutoConfig.from_pretrained(spec.source, trust_remote_code=mcfg.trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(spec.source, trust_remote_code=mcfg.trust_remote_code)
    return config, tokenizer


def _build_model(spec: BackboneSpec, config, mcfg, seed: int) -> nn.Module:
    from transformers import AutoModel

    dtype_name = mcfg.dtype if mcfg.dtype != "auto" else spec.dtype
    kwargs = {"attn_implementation": mcfg.attn_implementation}
    if spec.is_tiny:
        # Random init is a function of the run's seed: seeds are the replicates of a tiny study.
        torch.manual_seed(seed)
        model = AutoModel.from_config(config, **kwargs)
        return model.to(DTYPES.get(dtype_name, torch.float32))
    kwargs["dtype"] = DTYPES[dtype_name] if dtype_name in DTYPES else "auto"
    return AutoModel.from_pretrained(
        spec.source, config=config, trust_remote_code=mcfg.trust_remote_code, **kwargs
    )


def _apply_lora(model: nn.Module, lcfg) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    from study.config import ConfigError

    linear_names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
    targets = [t for t in lcfg.target_modules if t in linear_names]
    if not targets:
        raise ConfigError(
            f"model.lora.target_modules={list(lcfg.target_modules)} matches no linear layer of this backbone; "
            f"its linear layers are: {', '.join(linear_names)}"
        )
    config = LoraConfig(r=lcfg.r, lora_alpha=lcfg.alpha, lora_dropout=lcfg.dropout, target_modules=targets)
    return get_peft_model(model, config)
