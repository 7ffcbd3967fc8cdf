"""Weights & Biases: offline by default, one run per training run, finished at the run's end.

WANDB_MODE and WANDB_DIR in the environment win over the config (wandb's own
convention); otherwise files go under the run folder. Offline runs are uploaded
later with `wandb sync <dir>/wandb/offline-run-*`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from omegaconf import DictConfig

from study.config import to_container


def wandb_mode(cfg: DictConfig) -> str:
    return os.environ.get("WANDB_MODE") or cfg.wandb.mode


def wandb_dir(run_dir: Path) -> Path:
    path = Path(os.environ.get("WANDB_DIR") or run_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_logger(cfg: DictConfig, run_dir: Path, run_id: str, name: str, extra_config: dict | None = None,
                tags: list[str] | None = None):
    """Lightning's WandbLogger with our naming; its experiment is created lazily by Lightning."""
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    config = to_container(cfg)
    if extra_config:
        config.update(extra_config)
    return WandbLogger(
        name=name,
        id=run_id,
        save_dir=str(wandb_dir(run_dir)),  # explicit: WandbLogger's default '.' would override WANDB_DIR
        project=cfg.wandb.project,
        entity=cfg.wandb.entity,
        group=cfg.wandb.group,
        tags=list(cfg.wandb.tags) + list(tags or []),
        job_type=cfg.wandb.job_type,
        mode=wandb_mode(cfg),
        config=config,
        settings=wandb.Settings(console="off", x_disable_stats=True, silent=True),
    )


def finish(logger, run_dir: Path, summary: dict | None = None, tables: dict | None = None,
           exit_code: int = 0, extra_tags: list[str] | None = None, results_file: Path | None = None) -> None:
    """Write final metrics, a pointer file next to the results, and close the run.

    `results_file` (the run's results.parquet) is logged as an artifact of type `results`, so the
    analysis can rebuild per-query rows -- and so intervals over queries -- from W&B alone.
    """
    import wandb

    run = logger.experiment
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
    (run_dir / "wandb.json").write_text(json.dumps(pointer, indent=2))
    run.finish(exit_code=exit_code)


def finish_failed(logger, run_dir: Path, error: BaseException) -> None:
    """Close the W&B run of a run that did not finish, tagged by why: `pruned` (exit code 0), `interrupted`
    (SIGINT/SIGTERM) or `failed`; only finished runs are results (`study status NAME --wandb-dirs`)."""
    from study.interrupts import from_exception

    if not logger:
        return
    pruned = type(error).__name__ == "TrialPruned"
    why = "pruned" if pruned else "interrupted" if from_exception(error) else "failed"
    try:
        finish(logger, run_dir, exit_code=0 if pruned else 1, extra_tags=[why], summary={"state": why})
    except Exception as e:  # noqa: BLE001 - never hide the run's own error behind a W&B one
        import logging

        logging.getLogger(__name__).warning("could not close the W&B run: %s", e)


def wandb_mode_of(run) -> str:
    try:
        return "disabled" if run.disabled else ("offline" if run.offline else "online")
    except AttributeError:
        return "unknown"
