"""One run: build the parts from config, fine-tune with Lightning, evaluate, write results and W&B.

    config -> backbone + tokenizer -> embedder (pooling) -> ContrastiveModule + Trainer
           -> evaluation tasks -> results.parquet + W&B run, all under runs/<run_name>/
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig

from study import interrupts
from study.config import ConfigError, save_config
from study.launch import is_side_effect_process, placement

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    run_name: str
    run_id: str
    summary: dict[str, float]
    table: pd.DataFrame
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    info: dict = field(default_factory=dict)


def default_run_name(cfg: DictConfig) -> str:
    backbone = Path(cfg.model.backbone).name if "/" in cfg.model.backbone else cfg.model.backbone
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    encoding = "" if cfg.model.encoding == "full" else f"{cfg.model.encoding}-"
    return f"{backbone}-{encoding}{cfg.model.attention}-{cfg.model.pooling}-s{cfg.seed}-{stamp}"


def plan_run_dir(cfg: DictConfig, run_dir: Path | None = None) -> Path:
    """Choose the run folder and check it can be made, creating nothing: a finished run is never touched,
    an output_dir that is a file or cannot be written is refused (ConfigError)."""
    from study.paths import writable_dir

    if run_dir is None:
        if cfg.run_name is None:
            cfg.run_name = default_run_name(cfg)
        run_dir = Path(cfg.output_dir) / cfg.run_name
    if (run_dir / "results.parquet").exists():
        raise ConfigError(
            f"run_name={cfg.run_name!r}: {run_dir} already holds a finished run (results.parquet); "
            "choose another run_name or remove that folder"
        )
    if not writable_dir(run_dir):
        raise ConfigError(f"output_dir={cfg.output_dir!r}: cannot create the run folder {str(run_dir)!r} there "
                          "(a file is in the way, or the folder is not writable)")
    return run_dir


def prepare_run_dir(cfg: DictConfig, run_dir: Path | None = None) -> Path:
    """Choose and create the run folder; never touch a finished run."""
    run_dir = plan_run_dir(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def prepare_outputs(cfg: DictConfig, run_dir: Path | None = None) -> Path:
    """Rank 0: the run folder with config.yaml and train.log. The other ranks of a multi-process run write
    nothing: for them the returned folder is only a name (study/launch.py decides which rank is which)."""
    if not is_side_effect_process():
        return run_dir or Path(cfg.output_dir) / (cfg.run_name or "rank-nonzero")
    run_dir = prepare_run_dir(cfg, run_dir)
    save_config(cfg, run_dir / "config.yaml")
    _log_to_file(run_dir / "train.log")
    return run_dir


def run_logger(cfg: DictConfig, run_dir: Path, run_id: str, run_name: str, extra_config: dict,
               tags: list[str] | None):
    """The run's W&B logger on rank 0; False (no logger, no W&B files) on the other ranks."""
    from study.tracking import make_logger

    if not is_side_effect_process():
        return False
    return make_logger(cfg, run_dir, run_id, run_name, extra_config=extra_config, tags=tags)


def optimizer_factory(ocfg, max_steps: int):
    from transformers import get_scheduler

    schedule = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[ocfg.scheduler]

    def make(params):
        params = list(params)
        optimizer = torch.optim.AdamW(params, lr=ocfg.lr, weight_decay=ocfg.weight_decay, fused=_fused_ok(params))
        # A fused AdamW says it unscales gradients itself, and Lightning's mixed-precision plugin then refuses
        # gradient clipping. bf16 has no scaler; under fp16 the GradScaler then unscales before clipping, the
        # usual path. Either way clipping is right, so the step takes no part in scaling.
        optimizer._step_supports_amp_scaling = False
        scheduler = get_scheduler(schedule, optimizer, num_warmup_steps=ocfg.warmup_steps,
                                  num_training_steps=max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    return make


def _fused_ok(params) -> bool | None:
    """Fused AdamW (one kernel for every parameter instead of a dozen ops each: `study bench` measured the
    optimizer step of the default trial) where torch has it for these tensors: floating point, on CPU or
    CUDA. None leaves the choice to torch (foreach)."""
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices
    except ImportError:
        return None
    devices = set(_get_fused_kernels_supported_devices())
    ok = bool(params) and all(isinstance(p, torch.Tensor) and p.device.type in devices and p.is_floating_point()
                              for p in params)
    return True if ok else None


class PairCollator:
    """Rows of (query, instruction, positive, negatives) -> query batch + document batch."""

    def __init__(self, builder, hard_negatives: int, use_instructions: bool):
        self.builder = builder
        self.k = hard_negatives
        self.use_instructions = use_instructions

    def __call__(self, rows: list[dict]) -> dict:
        instructions = [(r.get("instruction") or "") if self.use_instructions else "" for r in rows]
        docs = [r["positive"] for r in rows] + [n for r in rows for n in (r.get("negatives") or [])[: self.k]]
        # Under model.encoding=chunked the documents come as chunks with their owners (mean-aggregated in
        # study/model.py), queries never.
        return {"query": self.builder([r["query"] for r in rows], instructions), "docs": self.builder.documents(docs)}


def dataloaders(cfg: DictConfig, builder):
    from torch.utils.data import DataLoader, RandomSampler

    from study.data.pairs import load_pairs

    pairs = load_pairs(cfg.data)
    if len(pairs["train"]) < cfg.trainer.batch_size:  # drop_last: not one batch, so 0 optimizer steps
        raise ConfigError(f"trainer.batch_size={cfg.trainer.batch_size} is larger than the {len(pairs['train'])} "
                          f"training pairs of data.train={cfg.data.train!r}: no optimizer step would run; lower "
                          "trainer.batch_size or give more pairs (data.num_pairs)")
    collate = PairCollator(builder, cfg.data.hard_negatives, cfg.model.use_instructions)
    generator = torch.Generator().manual_seed(cfg.seed)
    # An explicit sampler owns the generator, so its first permutation is randperm(seed): the one Lightning's
    # DistributedSampler(seed=seed) deals out rank by rank. DDP on N devices then sees the same global batches
    # as one device with N x batch_size (in the first epoch; later epochs reshuffle differently).
    sampler = RandomSampler(pairs["train"], generator=generator)
    train = DataLoader(pairs["train"], batch_size=cfg.trainer.batch_size, sampler=sampler, drop_last=True,
                       collate_fn=collate, num_workers=cfg.trainer.num_workers)
    val = None
    if cfg.data.num_val_pairs > 0 and len(pairs["validation"]):
        val_set = pairs["validation"].select(range(min(cfg.data.num_val_pairs, len(pairs["validation"]))))
        val = DataLoader(val_set, batch_size=cfg.trainer.batch_size, shuffle=False, collate_fn=collate,
                         num_workers=cfg.trainer.num_workers)
    return train, val


def eval_builder(cfg: DictConfig, backbone):
    from study.inputs import builder_from_config

    limit = cfg.eval.max_length or backbone.max_positions or 1 << 20
    return builder_from_config(backbone.tokenizer, min(limit, backbone.max_positions or limit), backbone.padding_side,
                               cfg.model)


def warn_truncation(cfg: DictConfig, backbone) -> None:
    """One log line when a requested evaluation length exceeds what the backbone can encode: those documents
    are truncated (each per-query row records encoded_length and answer_visible)."""
    positions = backbone.max_positions
    requested = max([*cfg.eval.lengths, cfg.eval.max_length or 0])
    if positions and requested > positions:
        log.warning("backbone %s has %d positions but evaluation asks for %d tokens (eval.lengths=%s, "
                    "eval.max_length=%s): documents are truncated to %d tokens; see encoded_length and "
                    "answer_visible in the results", cfg.model.backbone, positions, requested,
                    list(cfg.eval.lengths), cfg.eval.max_length, positions)


def build_tasks(cfg: DictConfig) -> list:
    """Every evaluation task, built (and so checked: data present and parseable) before any training."""
    from study.tasks import build_task

    return [build_task(name, cfg.eval) for name in cfg.eval.tasks]


def evaluate_embedder(cfg: DictConfig, embedder, backbone, device, tasks=None, cache=None) -> list[dict]:
    """Rows of every task in `cfg.eval.tasks` (or the already built `tasks`); `cache`: an embedding cache."""
    from study.evaluate import evaluate_task
    from study.tasks import build_task

    builder = eval_builder(cfg, backbone)
    warn_truncation(cfg, backbone)
    embedder.eval()
    rows = []
    for task in tasks if tasks is not None else (build_task(name, cfg.eval) for name in cfg.eval.tasks):
        rows += evaluate_task(embedder, builder, task, cfg.eval.batch_tokens, cfg.eval.precision, device,
                              cfg.eval.depth_buckets, cfg.model.use_instructions, cache=cache)
    return rows


def train_and_evaluate(
    cfg: DictConfig,
    run_dir: Path | None = None,
    identity: dict | None = None,
    extra_columns: dict | None = None,
    callbacks: tuple = (),
    wandb_tags: list[str] | None = None,
) -> RunResult | None:
    """The whole run. Returns None on non-zero ranks of a multi-process run."""
    import time

    import lightning.pytorch as pl

    from study.backbones import load_backbone
    from study.evaluate import summary as summarize
    from study.inputs import builder_from_config
    from study.losses import InfoNCE
    from study.model import build_embedder
    from study.module import ContrastiveModule
    from study.precision import resolve_precision, training_device
    from study.results import TABLE, make_table, write_table
    from study.tracking import finish, finish_failed

    # Everything that can refuse the run is checked before its folder exists: the folder, the evaluation
    # data, the backbone (hub ids offline), the training data and the number of optimizer steps.
    run_dir = plan_run_dir(cfg, run_dir) if is_side_effect_process() else run_dir
    tasks = build_tasks(cfg) if is_side_effect_process() else None  # rank 0 only: before seeding, so every
    pl.seed_everything(cfg.seed, workers=True, verbose=False)      # rank starts from the same random state
    backbone = load_backbone(cfg.model, seed=cfg.seed)  # verifies the attention direction
    embedder = build_embedder(backbone, cfg.model)
    builder = builder_from_config(backbone.tokenizer, cfg.model.max_length, backbone.padding_side, cfg.model)
    train_loader, val_loader = dataloaders(cfg, builder)
    run_dir = prepare_outputs(cfg, run_dir)
    run_name = cfg.run_name or run_dir.name
    run_id = (identity or {}).get("run_id") or uuid.uuid4().hex[:8]
    log.info("backbone %s (%s, %s attention, %s params), pooling=%s", cfg.model.backbone,
             backbone.info["model_type"], cfg.model.attention, f"{backbone.info['params']:,}", cfg.model.pooling)
    module = ContrastiveModule(
        embedder,
        InfoNCE(cfg.loss.temperature, gather=cfg.loss.gather_across_processes),
        optimizer_factory(cfg.optim, cfg.trainer.max_steps),
    )
    logger = run_logger(cfg, run_dir, run_id, run_name, {"backbone_info": backbone.info, **(identity or {})},
                        wandb_tags)
    trainer = pl.Trainer(
        max_steps=cfg.trainer.max_steps,
        accelerator=cfg.trainer.accelerator,
        strategy=cfg.trainer.strategy,
        **placement(cfg.trainer),  # devices, num_nodes, cluster plugin: from torchrun/srun when they launched us
        precision=resolve_precision(cfg.trainer.precision, training_device(cfg.trainer.accelerator)),
        accumulate_grad_batches=cfg.trainer.accumulate_grad_batches,
        gradient_clip_val=cfg.trainer.gradient_clip_val or None,
        val_check_interval=min(cfg.trainer.val_check_interval, cfg.trainer.max_steps * cfg.trainer.accumulate_grad_batches),
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if val_loader is not None else 0,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        logger=logger,
        callbacks=list(callbacks),
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        default_root_dir=str(run_dir),
    )
    t0 = time.perf_counter()
    # from_pretrained returns modules in eval mode and Lightning keeps modes as they are: without this,
    # dropout (LoRA's included) would be off during fine-tuning.
    module.train()
    try:
        trainer.fit(module, train_loader, val_loader)
    except BaseException as e:
        if trainer.is_global_zero:  # pruned (a finished run tagged "pruned"), interrupted or failed
            finish_failed(logger, run_dir, e)
        raise (interrupts.from_exception(e) if isinstance(e, SystemExit) else None) or e
    train_seconds = time.perf_counter() - t0
    with whole_weights(trainer):  # FSDP: all ranks gather the sharded weights onto rank 0 (else a no-op)
        if not trainer.is_global_zero:
            return None
        try:
            t0 = time.perf_counter()
            device = trainer.strategy.root_device
            embedder.to(device)
            rows = evaluate_embedder(cfg, embedder, backbone, device, tasks)
            eval_seconds = time.perf_counter() - t0
            identity = {
                "study": "", "trial": -1, "run_id": run_id, "run_name": run_name,
                "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "backbone": cfg.model.backbone, "encoding": cfg.model.encoding, "attention": cfg.model.attention,
                "pooling": cfg.model.pooling, "seed": cfg.seed, **(identity or {}),
            }
            table = make_table(rows, identity, extra_columns)
            scores = summarize(rows)
            if cfg.save_model:
                save_model(cfg, embedder, backbone, run_dir / "model")
        except BaseException as e:
            finish_failed(logger, run_dir, e)
            raise
    write_table(table, run_dir / TABLE)  # written last: its presence marks a finished run
    metrics = {f"eval/{k}": v for k, v in scores.items()}
    metrics.update({"time/train_seconds": train_seconds, "time/eval_seconds": eval_seconds})
    logger.log_metrics(metrics, step=trainer.global_step)
    aggregates = table[table.query_id.isna()].drop(columns=["query_id", "depth"])
    finish(logger, run_dir, summary=metrics, tables={"eval/results": aggregates.astype(str)},
           results_file=run_dir / TABLE)
    log.info("finished %s in %.0fs train + %.0fs eval -> %s", run_name, train_seconds, eval_seconds, run_dir)
    return RunResult(run_dir, run_name, run_id, scores, table, train_seconds, eval_seconds, backbone.info)


def whole_weights(trainer):
    """Evaluation and saving run on rank 0 alone, but FSDP leaves each rank 1/N of the weights: gather them
    whole onto rank 0 for as long as the context lasts. Every rank must enter (an all-gather); the others
    leave at once. Other strategies keep whole weights on every rank: nothing to do."""
    from contextlib import nullcontext

    from torch.distributed.fsdp import FullyShardedDataParallel

    model = trainer.strategy.model
    if not isinstance(model, FullyShardedDataParallel):
        return nullcontext()
    return FullyShardedDataParallel.summon_full_params(model, writeback=False, rank0_only=True)


def save_model(cfg: DictConfig, embedder, backbone, out: Path) -> None:
    """Backbone (or LoRA adapter), tokenizer, pooler weights and how to rebuild the embedder."""
    out.mkdir(parents=True, exist_ok=True)
    embedder.backbone.save_pretrained(out)
    backbone.tokenizer.save_pretrained(out)
    if any(True for _ in embedder.pooler.parameters()):
        torch.save(embedder.pooler.state_dict(), out / "pooler.pt")
    spec = {
        "backbone": cfg.model.backbone, "source": backbone.info["source"], "attention": cfg.model.attention,
        "pooling": cfg.model.pooling, "padding_side": backbone.padding_side, "append_eos": cfg.model.append_eos,
        "exclude_instruction": cfg.model.exclude_instruction, "max_length": cfg.model.max_length,
        "latent_attention": dict(cfg.model.latent_attention), "lora": cfg.model.lora.r > 0,
        "encoding": cfg.model.encoding, "chunk": dict(cfg.model.chunk), "mask_tokens": cfg.model.mask_tokens,
    }
    (out / "embedder.json").write_text(json.dumps(spec, indent=2))


def _log_to_file(path: Path) -> None:
    root = logging.getLogger("study")
    for h in list(root.handlers):
        if isinstance(h, logging.FileHandler):
            root.removeHandler(h)
            h.close()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    # The run's log file always gets INFO, whatever the console's level is.
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
