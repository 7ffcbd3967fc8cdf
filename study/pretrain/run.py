"""Pretrain (or MNTP-adapt) one tiny backbone: cached build, plain training loop, W&B + results table.

Both objectives build the same Qwen2-style model (`tiny_config("qwen2", tokenizer)`,
with an LM head: AutoModelForCausalLM) from the same seed, read the same blocks of the
same corpus in the same order for the same number of steps, and differ only in the
loss and the attention direction (proven with the causality probe before training).
A plain loop: the model is tiny, and Lightning would add seconds per run for nothing
we use here. precision=auto (default) trains in bf16 autocast only where bf16 is native, else in
fp32: emulated bf16 is slower than fp32 on CPU (study/precision.py).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from study.backbones.attention import set_attention, verify_attention
from study.backbones.index import FINISHED, backbones_dir, register
from study.backbones.tiny import tiny_config
from study.backbones.tokenizer import tiny_tokenizer
from study.config import flatten
from study.errors import ConfigError
from study.paths import file_lock
from study.precision import resolve_precision
from study.pretrain import objectives
from study.pretrain.config import DEFAULT_NAMES, cache_key, default_name, training_settings
from study.pretrain.corpus import load_corpus
from study.results import make_table, run_identity, write_table
from study.tracking import finish, finish_failed, open_run

log = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    name: str
    folder: Path
    cached: bool
    manifest: dict = field(default_factory=dict)


def pretrain(cfg: DictConfig) -> PretrainResult:
    """Build (or reuse) the backbone described by a validated pretraining config."""

    tokenizer = tiny_tokenizer()
    corpus = load_corpus(cfg.corpus, tokenizer)
    return _build(cfg, corpus, tokenizer, with_adapt=True)


def _build(cfg: DictConfig, corpus, tokenizer, with_adapt: bool) -> PretrainResult:
    adapt = cfg.adapt if with_adapt else "none"
    key = cache_key(cfg, corpus.key, with_adapt)
    name = default_name(cfg, key, with_adapt)
    folder = backbones_dir() / f"{DEFAULT_NAMES[(cfg.objective, adapt)]}-{key}"
    with _lock(folder):
        if (folder / FINISHED).exists():
            register(name, folder, key)
            return PretrainResult(name, folder, True, json.loads((folder / FINISHED).read_text()))
        parent = _build(cfg, corpus, tokenizer, with_adapt=False) if adapt == "mntp" else None
        manifest = _train_and_save(cfg, corpus, tokenizer, name, key, folder, parent)
        register(name, folder, key)
    return PretrainResult(name, folder, False, manifest)


def _lock(folder: Path):

    return file_lock(folder.with_suffix(".lock"))


# ------------------------------------------------------------------ model and data


def build_model(cfg: DictConfig, tokenizer, attention: str):
    """The tiny Qwen2-style LM; its initial weights depend only on `seed` (not on the objective)."""
    from transformers import AutoModelForCausalLM


    config = tiny_config("qwen2", tokenizer)
    set_attention(config, attention)
    torch.manual_seed(cfg.seed)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


def train_batches(stream: np.ndarray, seq_len: int, batch_size: int, steps: int, seed: int):
    """`steps` batches of contiguous blocks, in an order fixed by `seed` (reshuffled each epoch)."""
    n_blocks = len(stream) // seq_len
    if n_blocks < batch_size:

        raise ConfigError(f"the corpus has {n_blocks} blocks of seq_len={seq_len}, fewer than batch_size={batch_size}")
    rng = np.random.default_rng(seed)
    order, pos = rng.permutation(n_blocks), 0
    for _ in range(steps):
        if pos + batch_size > n_blocks:
            order, pos = rng.permutation(n_blocks), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        yield torch.from_numpy(np.stack([stream[i * seq_len : (i + 1) * seq_len] for i in idx]).astype(np.int64))


def val_batches(stream: np.ndarray, seq_len: int, batch_size: int, val_tokens: int) -> list[torch.Tensor]:
    n = min(val_tokens, len(stream)) // seq_len
    if n == 0:

        raise ConfigError(f"the validation split has fewer than seq_len={seq_len} tokens")
    blocks = torch.from_numpy(np.asarray(stream[: n * seq_len]).astype(np.int64)).view(n, seq_len)
    return list(blocks.split(batch_size))


class Objective:
    """loss(model, ids, generator) for one objective (autoregressive | masked_diffusion | mntp)."""

    def __init__(self, kind: str, mask_id: int, mask_eps: float = 1e-3, shift: bool = False, mask_prob: float = 0.2):
        self.kind, self.mask_id, self.eps, self.shift, self.prob = kind, mask_id, mask_eps, shift, mask_prob

    def __call__(self, model, ids: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.kind == "autoregressive":
            return objectives.autoregressive_loss(model(input_ids=ids).logits, ids)
        if self.kind == "masked_diffusion":
            c = objectives.diffusion_corruption(ids, self.mask_id, self.eps, gen, self.shift)
            return objectives.masked_diffusion_loss(model(input_ids=c.inputs).logits, ids, c, self.shift)
        c = objectives.mntp_corruption(ids, self.mask_id, self.prob, gen)
        return objectives.mntp_loss(model(input_ids=c.inputs).logits, ids, c)


# ------------------------------------------------------------------ training


def _schedule(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate(model, objective: Objective, batches: list[torch.Tensor], precision: str, device) -> float:
    """Mean loss over the fixed validation blocks (masks from a fixed stream, so evaluations compare)."""
    model.eval()
    gen = torch.Generator(device=device).manual_seed(1234)
    total, n = 0.0, 0
    for ids in batches:
        with _autocast(precision, device):
            total += objective(model, ids.to(device), gen).item() * len(ids)
        n += len(ids)
    model.train()
    return total / n


def _autocast(precision: str, device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=resolve_precision(precision, device) == "bf16-mixed")


def train_loop(model, objective: Objective, batches, steps: int, val: list[torch.Tensor], lr: float, cfg: DictConfig,
               log_fn) -> dict:
    """AdamW + warm-up/cosine; `log_fn(step, metrics)` gets train and validation losses."""
    device = next(model.parameters()).device
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, cfg.warmup, steps))
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    model.train()
    train_seconds, tokens, running, seen = 0.0, 0, 0.0, 0
    metrics = {"val_loss": evaluate(model, objective, val, cfg.precision, device)}
    log_fn(0, {"val_loss": metrics["val_loss"]})
    for step, ids in enumerate(batches, start=1):
        t0 = time.perf_counter()
        ids = ids.to(device)
        with _autocast(cfg.precision, device):
            loss = objective(model, ids, gen)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        train_seconds += time.perf_counter() - t0
        tokens += ids.numel()
        running, seen = running + loss.item(), seen + 1
        out = {}
        if step % cfg.log_every == 0 or step == steps:
            out["train_loss"] = metrics["train_loss"] = running / seen
            running, seen = 0.0, 0
            out["tokens_per_second"] = tokens / train_seconds
        if step % cfg.eval_every == 0 or step == steps:
            out["val_loss"] = metrics["val_loss"] = evaluate(model, objective, val, cfg.precision, device)
        if out:
            log_fn(step, {**out, "tokens": tokens, "lr": sched.get_last_lr()[0]})
    metrics.update(steps=steps, tokens=tokens, train_seconds=train_seconds, threads=torch.get_num_threads(),
                   precision=resolve_precision(cfg.precision, device),
                   tokens_per_second=tokens / max(train_seconds, 1e-9))
    metrics["val_perplexity"] = math.exp(min(metrics["val_loss"], 50))
    return metrics


def _train_and_save(cfg: DictConfig, corpus, tokenizer, name: str, key: str, folder: Path, parent) -> dict:
    import pandas as pd


    adapt = parent is not None
    kind = "mntp" if adapt else cfg.objective
    attention = "bidirectional" if adapt else objectives.attention_for(cfg.objective)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if adapt:
        from transformers import AutoModelForCausalLM


        # LLM2Vec step 1: open the AR model's attention, then adapt it with MNTP.
        config = _load_config(parent.folder)
        set_attention(config, "bidirectional")
        model = AutoModelForCausalLM.from_pretrained(parent.folder, config=config, attn_implementation="sdpa")
    else:
        model = build_model(cfg, tokenizer, attention)
    model.config.use_cache = False
    model.to(device)
    verify_attention(model.model, len(tokenizer), attention)  # refuse a silently wrong direction
    budget = cfg.adapt_tokens if adapt else cfg.tokens
    steps = max(1, budget // (cfg.batch_size * cfg.seq_len))
    # The adaptation reads the corpus in another order than pretraining did.
    batches = train_batches(corpus.train, cfg.seq_len, cfg.batch_size, steps, cfg.seed + (1000 if adapt else 0))
    val = val_batches(corpus.val, cfg.seq_len, cfg.batch_size, cfg.val_tokens)
    objective = Objective(kind, tokenizer.mask_token_id, cfg.mask_eps, cfg.shift, cfg.adapt_mask_prob)

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    run = _wandb_run(cfg, tmp, name, key, kind, attention, corpus, parent)
    rows, steps_col, tokens_col = [], [], []

    def log_fn(step: int, metrics: dict) -> None:
        wb = {f"{'val' if k.startswith('val') else 'train'}/{k.split('_', 1)[1]}": v for k, v in metrics.items()
              if k in ("train_loss", "val_loss")}
        if "val_loss" in metrics:
            wb["val/perplexity"] = math.exp(min(metrics["val_loss"], 50))
        wb.update({k: v for k, v in metrics.items() if k in ("tokens", "lr", "tokens_per_second")})
        run.log(wb, step=step)
        for metric in ("train_loss", "val_loss"):
            if metric in metrics:
                rows.append({"task": "pretrain", "length": cfg.seq_len, "metric": metric, "value": metrics[metric]})
                steps_col.append(step)
                tokens_col.append(metrics.get("tokens", 0))
        if "val_loss" in metrics or "train_loss" in metrics:
            log.info("%s step %d/%d %s", name, step, steps,
                     " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "lr"))

    t0 = time.perf_counter()
    try:
        metrics = train_loop(model, objective, batches, steps, val, cfg.adapt_lr if adapt else cfg.lr, cfg, log_fn)
    except BaseException as e:
        finish_failed(run, tmp, e)
        raise
    metrics["wall_seconds"] = time.perf_counter() - t0
    log.info("%s: %d steps, %s tokens in %.0fs (%.0f tokens/s training), val_loss %.4f", name, steps,
             f"{metrics['tokens']:,}", metrics["wall_seconds"], metrics["tokens_per_second"], metrics["val_loss"])

    model.to("cpu").save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    OmegaConf.save(cfg, tmp / "pretrain_config.yaml", resolve=True)
    lineage = {
        "name": name, "folder": folder.name, "cache_key": key, "objective": cfg.objective,
        "adapt": "mntp" if adapt else "none", "attention": attention, "pretrain_run_id": run.id,
        "wandb_project": cfg.wandb.project, "corpus_key": corpus.key[:16],
        "corpus_sha256": {s: corpus.manifest["splits"][s]["sha256"] for s in ("train", "val")},
        "parent": parent.manifest.get("lineage") if parent else None,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    (tmp / "lineage.json").write_text(json.dumps(lineage, indent=2))
    identity = run_identity(run.id, name, cfg.seed, created_at=lineage["created_at"], backbone=name,
                            attention=attention)
    table = make_table(rows, identity, {"objective": cfg.objective, "adapt": lineage["adapt"], "cache_key": key})
    table["step"] = pd.array(steps_col, dtype="Int64")
    table["tokens"] = pd.array(tokens_col, dtype="Int64")
    write_table(table, tmp / "results.parquet")
    _log_artifact(run, tmp, name, key, lineage, metrics)
    finish(run, tmp, summary={f"final/{k}": v for k, v in metrics.items()}, pointer_file=None)
    manifest = {"lineage": lineage, "metrics": metrics, "settings": training_settings(cfg, adapt),
                "corpus": corpus.manifest}
    (tmp / FINISHED).write_text(json.dumps(manifest, indent=2))  # last: marks a finished build
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return manifest


def _load_config(folder: Path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder)


def _wandb_run(cfg: DictConfig, folder: Path, name: str, key: str, kind: str, attention: str, corpus, parent):
    config = flatten(cfg)
    config.update({"cache_key": key, "name": name, "attention": attention, "phase": kind,
                   "corpus_key": corpus.key[:16], "corpus_train_tokens": corpus.manifest["splits"]["train"]["tokens"],
                   "parent_run_id": parent.manifest["lineage"]["pretrain_run_id"] if parent else None})
    return open_run(cfg, folder, uuid.uuid4().hex[:8], f"pretrain-{name}", config=config, tags=[cfg.objective, kind])


def _log_artifact(run, folder: Path, name: str, key: str, lineage: dict, metrics: dict) -> None:
    """The pretrained backbone as a W&B model artifact (offline runs upload it with `wandb sync`)."""
    import wandb

    artifact = wandb.Artifact(name, type="model", metadata={**lineage, **{f"final_{k}": v for k, v in metrics.items()}})
    for f in sorted(folder.iterdir()):
        if f.is_file():
            artifact.add_file(str(f))
    run.log_artifact(artifact, aliases=["latest", key])
