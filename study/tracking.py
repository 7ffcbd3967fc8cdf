"""Weights & Biases: offline by default, one run per training run, finished at the run's end.

WANDB_MODE and WANDB_DIR in the environment win over the config (wandb's own
convention); otherwise files go under the run folder. Offline runs are uploaded
later with `wandb sync <dir>/wandb/offline-run-*`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import wandb
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig

from study.config import to_container
from study.interrupts import from_exception
from study.results import POINTER, TABLE

log = logging.getLogger(__name__)


def wandb_mode(cfg: DictConfig) -> str:
    return os.environ.get("WANDB_MODE") or cfg.wandb.mode


def wandb_dir(run_dir: Path) -> Path:
    path = Path(os.environ.get("WANDB_DIR") or run_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_settings(cfg: DictConfig, run_dir: Path, run_id: str, name: str, *, job_type: str | None = None,
                 config: dict | None = None, tags: list[str] | tuple = ()) -> dict:
    """The wandb.init arguments of every run the project opens (train, eval, probes, pretraining): the one place
    that names project, group, mode, folder and tags. `config` defaults to the whole resolved config; files go
    under run_dir unless WANDB_DIR says otherwise."""
    return dict(
        id=run_id,
        name=name,
        project=cfg.wandb.project,
        entity=cfg.wandb.entity,
        group=cfg.wandb.group,
        job_type=job_type or cfg.wandb.job_type,
        tags=list(cfg.wandb.tags) + list(tags),
        config=to_container(cfg) if config is None else config,
        dir=str(wandb_dir(run_dir)),
        mode=wandb_mode(cfg),
        settings=wandb.Settings(console="off", x_disable_stats=True, silent=True),
    )


def open_run(cfg: DictConfig, run_dir: Path, run_id: str, name: str, **kwargs):
    """Open a W&B run now (probes, pretraining); `finish` closes it."""
    # reinit: several runs in one process (a sweep worker, probes after training)
    return wandb.init(**run_settings(cfg, run_dir, run_id, name, **kwargs), reinit="create_new")


def make_logger(cfg: DictConfig, run_dir: Path, run_id: str, name: str, extra_config: dict | None = None,
                tags: list[str] | None = None) -> WandbLogger:
    """Lightning's WandbLogger for train and eval: it opens the run with `run_settings` when it first logs."""
    settings = run_settings(cfg, run_dir, run_id, name, config={**to_container(cfg), **(extra_config or {})},
                            tags=tags or ())
    # explicit save_dir: WandbLogger's default '.' would override WANDB_DIR
    return WandbLogger(save_dir=settings.pop("dir"), **settings)


def finish(run, run_dir: Path, summary: dict | None = None, tables: dict | None = None,
           exit_code: int = 0, extra_tags: list[str] | None = None, results_file: Path | None = None,
           pointer_file: str | None = POINTER) -> None:
    """Write final metrics, close the run (a W&B run from `open_run`, or the WandbLogger from `make_logger`),
    then write a pointer file next to the results.

    `results_file` (the run's results.parquet) is logged as an artifact of type `results`, so the
    analysis can rebuild per-query rows -- and so intervals over queries -- from W&B alone.
    """
    run = getattr(run, "experiment", run)
    if extra_tags:
        run.tags = tuple(run.tags or ()) + tuple(extra_tags)
    if summary:
        run.summary.update(summary)
    for key, df in (tables or {}).items():
        run.log({key: wandb.Table(dataframe=df)})
    if results_file is not None and Path(results_file).is_file():
        artifact = wandb.Artifact(f"results-{run.id}", type="results")
        artifact.add_file(str(results_file))
        run.log_artifact(artifact)
    pointer = {
        "run_id": run.id,
        "name": run.name,
        "project": run.project,
        "group": run.group,
        "tags": list(run.tags or ()),
        "mode": wandb_mode_of(run),
        "dir": str(Path(run.dir).parent) if run.dir else None,
    }
    run.finish(exit_code=exit_code)
    # Written after the run has closed (its .wandb file flushed), so a pointer means a complete W&B record:
    # a sweep adopts a dead trial's folder only when it has one (sweep/dispatch.finished_scores).
    if pointer_file:  # None for runs that share a run folder with its own W&B run (probes)
        (run_dir / pointer_file).write_text(json.dumps(pointer, indent=2))


def finish_with_results(logger: WandbLogger, run_dir: Path, table, metrics: dict, step: int = 0) -> None:
    """The end of a finished run (training or evaluation): its metrics, its aggregate rows as a W&B table and
    its results table as an artifact; then the run closes."""
    logger.log_metrics(metrics, step=step)
    aggregates = table[table.query_id.isna()].drop(columns=["query_id", "depth"])
    finish(logger, run_dir, summary=metrics, tables={"eval/results": aggregates.astype(str)},
           results_file=run_dir / TABLE)


def finish_failed(run, run_dir: Path, error: BaseException) -> None:
    """Close the W&B run of a run that did not finish, tagged by why: `pruned` (exit code 0), `interrupted`
    (SIGINT/SIGTERM) or `failed`; only finished runs are results (`study status NAME --wandb-dirs`)."""
    if not run:
        return
    pruned = type(error).__name__ == "TrialPruned"
    why = "pruned" if pruned else "interrupted" if from_exception(error) else "failed"
    try:
        finish(run, run_dir, exit_code=0 if pruned else 1, extra_tags=[why], summary={"state": why})
    except Exception as e:  # noqa: BLE001 - never hide the run's own error behind a W&B one
        log.warning("could not close the W&B run: %s", e)


def wandb_mode_of(run) -> str:
    try:
        return "disabled" if run.disabled else ("offline" if run.offline else "online")
    except AttributeError:
        return "unknown"
