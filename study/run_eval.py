"""`study eval`: score a model on any registered tasks, without training.

    study eval runs/<run> tasks=[passkey,needle,pydocs]      a trained run (its model/ folder)
    study eval model.backbone=all-minilm-l6-v2 model.pooling=mean tasks=[pydocs]   an off-the-shelf model
    study eval bm25 tasks=[pydocs]                           the BM25 reference row

`tasks=[...]` is short for `eval.tasks=[...]`; every `eval.*` and `wandb.*` key
works too. A trained run's model keys come from its config.yaml (overriding
them is refused, except how documents are read: `model.encoding`, `model.chunk.*`). Each call writes a new folder and never touches existing
results: `runs/<run>/eval-<time>/` for a run, `<output_dir>/<run_name>/` (default
`eval-<backbone>-<attention>-<pooling>-<time>`, or `eval-bm25-<time>`) otherwise,
holding config.yaml, results.parquet (the results table) and a W&B run with
job_type=eval. Task data is loaded before the model, so missing data fails fast.
Embeddings are cached (study.embedding_cache: `<run>/embeddings/` for a run), so
evaluating the same model again on the same tasks re-encodes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from study.bm25 import NAME as BM25
from study.bm25 import evaluate_bm25
from study.config import load_config, save_config
from study.embedding_cache import EmbeddingCache, model_key, run_cache
from study.errors import ConfigError
from study.evaluate import summary as summarize
from study.inference import build_tasks, evaluate_embedder, load_embedder
from study.paths import cache_dir
from study.results import TABLE, make_table, run_identity, write_table
from study.tracking import finish_with_results, make_logger

log = logging.getLogger(__name__)

RUN_FIXED = ("model.", "data.", "loss.", "optim.", "trainer.", "seed", "save_model", "run_name")
# How a trained model reads a document is not in its weights: a run trained on full documents can be
# evaluated chunked (issue 11), so these model keys may be overridden on a run.
READING = ("model.encoding", "model.chunk.")


@dataclass
class EvalResult:
    eval_dir: Path
    table: pd.DataFrame
    summary: dict


def normalize_overrides(overrides: list[str]) -> list[str]:
    """`tasks=[...]` (the short spelling) -> `eval.tasks=[...]`."""
    return [f"eval.{o}" if o.split("=", 1)[0] == "tasks" else o for o in overrides]


def _stamp() -> str:
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def _new_dir(parent: Path, name: str) -> Path:
    """A folder that did not exist before (name, name-2, ...): never reuse another evaluation's folder."""
    parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 1000):
        path = parent / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"could not create a new evaluation folder under {parent}")


def resolve(target: str | None, overrides: list[str], config_file: str | None = None):
    """(mode, cfg, run_dir): mode is 'run', 'model' or 'bm25'. Validates everything before compute."""
    overrides = normalize_overrides(list(overrides))
    if target == "bm25":
        cfg = load_config(config_file, overrides, validate_backbone=False)
        return "bm25", cfg, None
    if target is not None:
        run_dir = Path(target)
        if not run_dir.is_dir():
            raise ConfigError(f"study eval {target!r}: not a run folder (and not 'bm25'); give a finished run's "
                              "folder (runs/<run>), 'bm25', or model.backbone=... for an off-the-shelf model")
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"study eval {target!r}: {run_dir} has no config.yaml; is it a run folder?")
        fixed = [o.split("=", 1)[0] for o in overrides
                 if o.split("=", 1)[0].startswith(RUN_FIXED) and not o.split("=", 1)[0].startswith(READING)]
        if fixed or config_file:
            what = f"--config {config_file}" if config_file else fixed[0]
            raise ConfigError(f"study eval {target}: {what} cannot be changed; a trained run's model and training "
                              "keys come from its config.yaml (only eval.*, tasks, wandb.*, output_dir and how "
                              "documents are read -- model.encoding, model.chunk.* -- apply)")
        cfg = load_config(run_dir / "config.yaml", overrides, validate_backbone=False)
        return "run", cfg, run_dir
    cfg = load_config(config_file, overrides)
    return "model", cfg, None


def eval_dir_for(mode: str, cfg: DictConfig, run_dir: Path | None) -> Path:
    if mode == "run":
        return _new_dir(run_dir, f"eval-{_stamp()}")
    if cfg.run_name:
        out = Path(cfg.output_dir) / cfg.run_name
        if (out / "results.parquet").exists():
            raise ConfigError(f"run_name={cfg.run_name!r}: {out} already holds results; choose another run_name")
        out.mkdir(parents=True, exist_ok=True)
        return out
    if mode == "bm25":
        return _new_dir(Path(cfg.output_dir), f"eval-bm25-{_stamp()}")
    backbone = Path(cfg.model.backbone).name
    encoding = "" if cfg.model.encoding == "full" else f"{cfg.model.encoding}-"
    return _new_dir(Path(cfg.output_dir),
                    f"eval-{backbone}-{encoding}{cfg.model.attention}-{cfg.model.pooling}-{_stamp()}")


def _source_run_id(run_dir: Path) -> str | None:
    try:
        ids = pd.read_parquet(run_dir / TABLE, columns=["run_id"]).run_id.dropna()
        return str(ids.iloc[0]) if len(ids) else None
    except Exception:
        return None


def _embedding_cache(mode: str, run_dir: Path | None, embedder, cfg: DictConfig):
    """Re-evaluating the same model re-encodes nothing: a run's cache is <run>/embeddings/, an
    off-the-shelf model's is under the study cache; both keyed by weights and every model setting."""
    if mode == "run":
        return run_cache(run_dir, embedder, cfg.model)
    return EmbeddingCache(cache_dir() / "embeddings", model_key(embedder, cfg.model))


def run_eval(target: str | None, overrides: list[str], config_file: str | None = None) -> EvalResult:
    mode, cfg, run_dir = resolve(target, overrides, config_file)
    tasks = build_tasks(cfg)  # missing data fails here, before the model
    # A backbone that cannot be loaded (a hub id offline) is refused before the evaluation folder exists.
    embedder, backbone = load_embedder(cfg, run_dir) if mode != "bm25" else (None, None)
    out = eval_dir_for(mode, cfg, run_dir)
    OmegaConf.set_readonly(cfg, False)
    cfg.wandb.job_type = "eval"
    save_config(cfg, out / "config.yaml")

    t0 = time.perf_counter()
    if mode == "bm25":
        rows = [row for task in tasks for row in evaluate_bm25(task, cfg.eval.depth_buckets)]
        ablation = {"backbone": BM25, "encoding": None, "attention": None, "pooling": None}
        info = {"model": "bm25s", "k1": 1.5, "b": 0.75}
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        embedder.to(device)
        rows = evaluate_embedder(cfg, embedder, backbone, device, tasks, _embedding_cache(mode, run_dir, embedder, cfg))
        ablation = {}
        info = dict(backbone.info)
    seconds = time.perf_counter() - t0

    wandb_id = uuid.uuid4().hex[:8]
    run_name = (cfg.run_name if mode == "run" else None) or out.name
    run_id = (_source_run_id(run_dir) if mode == "run" else None) or wandb_id
    table = make_table(rows, run_identity(run_id, run_name, cfg.seed, None if mode == "bm25" else cfg.model, **ablation))
    write_table(table, out / TABLE)
    scores = summarize(rows)
    backbone_name = BM25 if mode == "bm25" else cfg.model.backbone
    logger = make_logger(cfg, out, wandb_id, f"{run_name}/{out.name}" if mode == "run" else out.name,
                         extra_config={"eval_of": str(run_dir) if run_dir else backbone_name, "model_info": info})
    finish_with_results(logger, out, table, {**{f"eval/{k}": v for k, v in scores.items()}, "time/eval_seconds": seconds})
    log.info("evaluated %s on %s in %.0fs -> %s", backbone_name, ", ".join(cfg.eval.tasks), seconds, out)
    return EvalResult(out, table, scores)
