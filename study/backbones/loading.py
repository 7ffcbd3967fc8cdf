"""Load a backbone + tokenizer, set its attention direction, LoRA and checkpointing, and prove the direction."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from study.backbones import gguf, modernbert, native
from study.backbones.attention import UnsupportedBackbone, check_implementation, set_attention, verify_attention
from study.backbones.attention import family as model_family
from study.backbones.index import read_lineage
from study.backbones.registry import BackboneSpec, resolve_backbone
from study.backbones.tiny import scale_residual_branches, tiny_config
from study.backbones.tokenizer import load_tokenizer, tiny_tokenizer
from study.config import LoRAConfig
from study.errors import ConfigError

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
    if gguf.is_gguf(spec.source):  # dequantized once into a cached save_pretrained folder
        spec = dataclasses.replace(spec, source=str(gguf.cached_folder(spec.source)))
    if spec.is_tiny:

        tokenizer = tiny_tokenizer()
        config = tiny_config(spec.source.split(":", 1)[1], tokenizer)
    else:
        try:
            config, tokenizer = _pretrained_config_and_tokenizer(spec, mcfg)
        except UnsupportedBackbone:  # a checkpoint we can read but refuse: its own precise message
            raise
        except (OSError, ValueError) as e:  # offline and not cached, no such repo, not a model folder
            raise _unloadable(mcfg.backbone, spec.source, e) from None
    remote = _remote_diffusion(config, mcfg)
    if remote:
        # Their own code fixes the attention direction; the causality probe below reports what it does.
        log.warning("%s runs its remote code: model.attention=%s cannot be set, only verified",
                    spec.source, mcfg.attention)
    fam = "decoder" if remote else model_family(config)
    # A causal ModernBERT encoder is built as itself, then moved into the decoder class (backbones/modernbert.py).
    via_decoder = config.model_type == "modernbert" and mcfg.attention == "causal"
    if not remote:
        set_attention(config, "bidirectional" if via_decoder else mcfg.attention)
        check_implementation(config, mcfg.attention, mcfg.attn_implementation)
    model = _build_model(spec, config, mcfg, seed)
    if via_decoder:
        model = modernbert.as_decoder(model, causal=True)
        config, fam = model.config, "decoder"
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    if tokenizer.pad_token_id is None:
        # Llama/Mistral tokenizers have no pad token; padded positions are masked anyway.
        tokenizer.pad_token = tokenizer.eos_token
    if mcfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if mcfg.lora.r > 0:
        model = _apply_lora(model, mcfg.lora, fam)
    if verify:
        verify_attention(model, len(tokenizer), mcfg.attention, what=f"backbone {mcfg.backbone!r}")
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
        info={"source": spec.source, "model_type": config.model_type, "params": n_params, "trainable_params": n_train,
              **_pretrain_lineage(spec.source)},
    )


def check_loadable(name: str) -> None:
    """Refuse a hub backbone whose config cannot be fetched (offline and not cached, no such repo) before a
    sweep creates anything; registered tiny models, local folders and GGUF files need no check."""
    from pathlib import Path

    from transformers import AutoConfig

    spec = resolve_backbone(name)
    if spec.is_tiny or gguf.is_gguf(spec.source) or Path(spec.source).expanduser().exists():
        return
    try:
        AutoConfig.from_pretrained(spec.source)
    except ValueError:  # the config is there but needs its remote code: loadable with trust_remote_code
        return
    except OSError as e:
        raise _unloadable(name, spec.source, e) from None


def _unloadable(name: str, source: str, e: Exception):
    """The ConfigError for a backbone whose files cannot be fetched or read (first line of the library's reason)."""

    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return ConfigError(f"model.backbone={name!r} cannot be loaded from {source!r}: {first}")


def _pretrain_lineage(source: str) -> dict:
    """A `study pretrain` build records which pretraining run (W&B id, cache key) the fine-tuning starts from."""

    lineage = read_lineage(source)
    return {"pretrain": lineage} if lineage else {}


def _pretrained_config_and_tokenizer(spec: BackboneSpec, mcfg):
    from transformers import AutoConfig


    raw = native.read_config_json(spec.source)
    kind = native.mapping_kind(raw)
    if kind and not mcfg.trust_remote_code:
        log.info("%s: %s checkpoint loaded as a native %s (not its remote code)", spec.source, kind,
                 "Qwen2" if kind == "dream" else "Llama")
        return native.native_config(raw), native.load_tokenizer(spec.source, kind)
    if mcfg.trust_remote_code:
        log.warning("model.trust_remote_code=true: running code shipped with %s", spec.source)
    config = AutoConfig.from_pretrained(spec.source, trust_remote_code=mcfg.trust_remote_code)
    if kind:  # Dream/LLaDA remote code: their model code only; the tokenizer is the same either way
        return config, native.load_tokenizer(spec.source, kind)
    return config, load_tokenizer(spec.source, mcfg.trust_remote_code)


def _build_model(spec: BackboneSpec, config, mcfg, seed: int) -> nn.Module:
    from transformers import AutoModel

    dtype_name = mcfg.dtype if mcfg.dtype != "auto" else spec.dtype
    kwargs = {"attn_implementation": mcfg.attn_implementation}
    if spec.is_tiny:

        # Random init is a function of the run's seed: seeds are the replicates of a tiny study.
        torch.manual_seed(seed)
        model = AutoModel.from_config(config, **kwargs)
        scale_residual_branches(model, getattr(config, "residual_init_scale", 1.0))
        return model.to(DTYPES.get(dtype_name, torch.float32))
    kwargs["dtype"] = DTYPES[dtype_name] if dtype_name in DTYPES else "auto"
    if getattr(config, "native_mapping", None):
        return native.load_native(spec.source, config, **kwargs)
    if _remote_diffusion(config, mcfg):
        return native.load_remote(spec.source, **kwargs)
    return AutoModel.from_pretrained(
        spec.source, config=config, trust_remote_code=mcfg.trust_remote_code, **kwargs
    )


def _remote_diffusion(config, mcfg) -> bool:
    return bool(mcfg.trust_remote_code and native.NATIVE_TYPES.get(getattr(config, "model_type", None)))


# model.lora.target_modules left at its default (decoder names) means "the family's usual targets".
_FAMILY_LORA_TARGETS = {
    "encoder": ["query", "key", "value", "dense"],
    "olmo": ["q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"],  # LLaDA remote code
    # ModernBERT / Ettin: fused Wqkv (encoder) or q/k/v (decoder), attention and MLP Wo, MLP Wi
    "modernbert": ["Wqkv", "q_proj", "k_proj", "v_proj", "Wo", "Wi"],
}


def _apply_lora(model: nn.Module, lcfg, fam: str = "decoder") -> nn.Module:
    from peft import LoraConfig, get_peft_model


    linear_names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
    wanted = list(lcfg.target_modules)
    if wanted == LoRAConfig().target_modules and "attn_out" in linear_names:
        wanted = _FAMILY_LORA_TARGETS["olmo"]
    elif wanted == LoRAConfig().target_modules and "Wi" in linear_names:
        wanted = _FAMILY_LORA_TARGETS["modernbert"]
    elif wanted == LoRAConfig().target_modules and fam == "encoder":
        wanted = _FAMILY_LORA_TARGETS["encoder"]
    targets = [t for t in wanted if t in linear_names]
    if not targets:
        raise ConfigError(
            f"model.lora.target_modules={list(lcfg.target_modules)} matches no linear layer of this backbone; "
            f"its linear layers are: {', '.join(linear_names)}"
        )
    config = LoraConfig(r=lcfg.r, lora_alpha=lcfg.alpha, lora_dropout=lcfg.dropout, target_modules=targets)
    return get_peft_model(model, config)
