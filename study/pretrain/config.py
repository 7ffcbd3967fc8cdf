"""Typed pretraining config: dataclass schema + OmegaConf, validated like `study.config` (same errors).

Precedence: schema defaults <- YAML file (`--config`) <- `key=value` overrides.
Everything but `wandb.*` and `name` goes into the cache key, so two calls with
the same settings (and the same corpus) share one pretrained backbone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from study.backbones.registry import REGISTRY
from study.config import WandbConfig, choice, load_structured, to_container
from study.errors import ConfigError
from study.precision import LOOP_PRECISIONS
from study.pretrain.corpus import CorpusConfig, check_corpus_config

OBJECTIVES = ("autoregressive", "masked_diffusion")
ADAPTATIONS = ("none", "mntp")
PRETRAIN_VERSION = 1  # bump when the training recipe changes so caches rebuild
# Registered names of the default builds (`name` left null and every other key at its default).
DEFAULT_NAMES = {("autoregressive", "none"): "tiny-ar", ("masked_diffusion", "none"): "tiny-diffusion",
                 ("autoregressive", "mntp"): "tiny-ar-mntp"}


@dataclass
class PretrainConfig:
    objective: str = choice("autoregressive", OBJECTIVES)
    # Registered backbone name; null: tiny-ar / tiny-diffusion / tiny-ar-mntp for the default
    # settings, <that name>-<hash8> for any other settings (so defaults are never replaced silently).
    name: Optional[str] = None
    seed: int = 0  # initial weights and data order: the same for both objectives
    tokens: int = 250_000  # training token budget (batch_size x seq_len x steps: 61 steps); timings: docs/backbones.md
    seq_len: int = 256
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 20  # steps of linear warm-up, then cosine decay to lr/10
    grad_clip: float = 1.0
    val_tokens: int = 16384  # held-out tokens scored at every evaluation
    eval_every: int = 25  # steps between validation losses (and at the end)
    log_every: int = 10  # steps between train-loss rows
    # auto: bf16 autocast on a GPU or a CPU with native bf16 (AVX512-BF16/AMX: about 2x faster), else fp32
    # (without them bf16 matmuls are emulated and about 4x SLOWER than fp32).
    precision: str = choice("auto", LOOP_PRECISIONS)
    # masked diffusion: mask ratio p = (1 - mask_eps) t + mask_eps, t ~ U(0, 1) per sequence
    mask_eps: float = 1e-3
    # Dream-style shift: position i predicts (masked) token i+1 instead of token i
    shift: bool = False
    adapt: str = choice("none", ADAPTATIONS)  # mntp: LLM2Vec masked next-token prediction, attention opened
    adapt_tokens: int = 100_000
    adapt_mask_prob: float = 0.2
    adapt_lr: float = 5e-4
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    wandb: WandbConfig = field(default_factory=lambda: WandbConfig(job_type="pretrain"))


def load_pretrain_config(config_file: str | Path | None = None, overrides=()) -> DictConfig:
    """The validated pretraining config; ConfigError (exit 2 in the CLI) before any compute."""
    cfg = load_structured(PretrainConfig, config_file, overrides)
    validate(cfg)
    return cfg


def validate(cfg: DictConfig) -> None:
    for key in ("tokens", "seq_len", "batch_size", "lr", "val_tokens", "eval_every", "log_every", "adapt_tokens",
                "adapt_lr"):
        if cfg[key] is None or cfg[key] <= 0:
            raise ConfigError(f"{key}={cfg[key]!r} must be > 0")
    if cfg.seq_len < 8:
        raise ConfigError(f"seq_len={cfg.seq_len} must be >= 8")
    if cfg.tokens < cfg.batch_size * cfg.seq_len:
        raise ConfigError(f"tokens={cfg.tokens} is less than one batch (batch_size x seq_len = {cfg.batch_size * cfg.seq_len})")
    if cfg.warmup < 0 or cfg.weight_decay < 0 or cfg.grad_clip < 0:
        raise ConfigError("warmup, weight_decay and grad_clip must be >= 0")
    if not 0 <= cfg.mask_eps < 1:
        raise ConfigError(f"mask_eps={cfg.mask_eps!r} must be in [0, 1)")
    if not 0 < cfg.adapt_mask_prob < 1:
        raise ConfigError(f"adapt_mask_prob={cfg.adapt_mask_prob!r} must be in (0, 1)")
    if cfg.shift and cfg.objective != "masked_diffusion":
        raise ConfigError("shift=true is the Dream-style masked-diffusion variant; it needs objective=masked_diffusion")
    if cfg.adapt == "mntp" and cfg.objective != "autoregressive":
        raise ConfigError(f"adapt=mntp adapts an autoregressive backbone (LLM2Vec); objective={cfg.objective!r} "
                          "is already bidirectional: use objective=autoregressive")
    if cfg.name is not None:

        ok = cfg.name.replace("-", "").replace("_", "").replace(".", "").isalnum()
        if not ok or (cfg.name in REGISTRY and not REGISTRY[cfg.name].source.startswith("pretrained:")):
            raise ConfigError(f"name={cfg.name!r} must be letters, digits, '-', '_', '.' and not a built-in backbone name")
    check_corpus_config(cfg.corpus)


def training_settings(cfg: DictConfig, with_adapt: bool = True) -> dict:
    """The settings that decide the weights (everything but name and wandb.*)."""
    out = to_container(cfg)
    out.pop("wandb", None)
    out.pop("name", None)
    if not with_adapt or cfg.adapt == "none":
        for key in ("adapt_tokens", "adapt_mask_prob", "adapt_lr"):
            out.pop(key)
        out["adapt"] = "none"
    return out


def cache_key(cfg: DictConfig, corpus_key: str, with_adapt: bool = True) -> str:
    blob = json.dumps([training_settings(cfg, with_adapt), corpus_key, PRETRAIN_VERSION], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def default_name(cfg: DictConfig, key: str, with_adapt: bool = True) -> str:
    """The explicit `name`, else tiny-ar / tiny-diffusion / tiny-ar-mntp for default settings, else <name>-<hash8>."""
    adapt = cfg.adapt if with_adapt else "none"
    if cfg.name is not None and (with_adapt or cfg.adapt == "none"):
        return cfg.name
    base = DEFAULT_NAMES[(cfg.objective, adapt)]
    reference = OmegaConf.merge(OmegaConf.structured(PretrainConfig), {"objective": cfg.objective, "adapt": adapt})
    is_default = training_settings(cfg, with_adapt) == training_settings(reference, adapt != "none")
    return base if is_default else f"{base}-{key[:8]}"

