"""One run: build the parts from config, fine-tune with Lightning, evaluate, write results and W&B.

    config -> backbone + tokenizer -> embedder (pooling) -> ContrastiveModule + Trainer
           -> evaluation tasks -> results.parquet + W&B run, all under runs/<run_name>/
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import torch
from omegaconf import DictConfig
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.utils.data import DataLoader, RandomSampler
from transformers import get_scheduler

from study import interrupts
from study.backbones.loading import load_backbone
from study.config import save_config
from study.data.pairs import load_pairs
from study.errors import ConfigError
from study.evaluate import summary as summarize
from study.inference import build_tasks, evaluate_embedder, save_model
from study.inputs import builder_from_config
from study.launch import is_side_effect_process, placement
from study.losses import InfoNCE
from study.model import build_embedder
from study.module import ContrastiveModule
from study.paths import writable_dir
from study.precision import resolve_precision, training_device
from study.results import TABLE, make_table, run_identity, write_table
from study.tracking import finish_failed, finish_with_results, make_logger

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
    if not is_side_effect_process():
        return False
    return make_logger(cfg, run_dir, run_id, run_name, extra_config=extra_config, tags=tags)


def optimizer_factory(ocfg, max_steps: int):
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


def train_and_evaluate(
    cfg: DictConfig,
    run_dir: Path | None = None,
    identity: dict | None = None,
    extra_columns: dict | None = None,
    callbacks: tuple = (),
    wandb_tags: list[str] | None = None,
) -> RunResult | None:
    """The whole run. Returns None on non-zero ranks of a multi-process run."""
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
    precision = resolve_precision(cfg.trainer.precision, training_device(cfg.trainer.accelerator))
    # The resolved precision, not `auto`: train and eval seconds are only comparable within one precision.
    log.info("backbone %s (%s, %s attention, %s params), pooling=%s, precision=%s", cfg.model.backbone,
             backbone.info["model_type"], cfg.model.attention, f"{backbone.info['params']:,}", cfg.model.pooling,
             precision)
    module = ContrastiveModule(
        embedder,
        InfoNCE(cfg.loss.temperature, gather=cfg.loss.gather_across_processes),
        optimizer_factory(cfg.optim, cfg.trainer.max_steps),
    )
    logger = run_logger(cfg, run_dir, run_id, run_name,
                        {"backbone_info": backbone.info, "precision_used": precision, **(identity or {})},
                        wandb_tags)
    trainer = pl.Trainer(
        max_steps=cfg.trainer.max_steps,
        accelerator=cfg.trainer.accelerator,
        strategy=cfg.trainer.strategy,
        **placement(cfg.trainer),  # devices, num_nodes, cluster plugin: from torchrun/srun when they launched us
        precision=precision,
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
            table = make_table(rows, run_identity(run_id, run_name, cfg.seed, cfg.model, **(identity or {})),
                               extra_columns)
            scores = summarize(rows)
            if cfg.save_model:
                save_model(cfg, embedder, backbone, run_dir / "model")
        except BaseException as e:
            finish_failed(logger, run_dir, e)
            raise
    write_table(table, run_dir / TABLE)  # with POINTER (written once W&B has closed), marks a finished run
    metrics = {f"eval/{k}": v for k, v in scores.items()}
    metrics.update({"time/train_seconds": train_seconds, "time/eval_seconds": eval_seconds})
    finish_with_results(logger, run_dir, table, metrics, step=trainer.global_step)
    log.info("finished %s in %.0fs train + %.0fs eval -> %s", run_name, train_seconds, eval_seconds, run_dir)
    return RunResult(run_dir, run_name, run_id, scores, table, train_seconds, eval_seconds, backbone.info)


def whole_weights(trainer):
    """Evaluation and saving run on rank 0 alone, but FSDP leaves each rank 1/N of the weights: gather them
    whole onto rank 0 for as long as the context lasts. Every rank must enter (an all-gather); the others
    leave at once. Other strategies keep whole weights on every rank: nothing to do."""
    model = trainer.strategy.model
    if not isinstance(model, FullyShardedDataParallel):
        return nullcontext()
    return FullyShardedDataParallel.summon_full_params(model, writeback=False, rank0_only=True)


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
