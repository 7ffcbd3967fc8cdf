"""The results table: the contract between runs and analysis.

Long format, one row per measurement, Parquet. A run writes its table once, at
its end (atomically), so a killed run leaves nothing half-written. A study's
table is the union of its trials' tables.

| column | meaning |
|---|---|
| study | sweep name ("" for single runs) |
| trial | Optuna trial number (-1 if none) |
| run_id, run_name, created_at | identity of the run (created_at: UTC ISO time) |
| backbone, encoding, attention, pooling, seed | the ablation: config keys model.backbone, model.encoding, model.attention, model.pooling, seed (ABLATION_KEYS below, the one mapping; encoding: full, echo or chunked, docs/encodings.md) |
| <dotted config key> | every other swept parameter, as its own column (e.g. optim.lr); a swept ablation key is its ablation column only |
| task | passkey, needle, ... (pretrain for pretraining curves) |
| length | target document length in tokens (null if not applicable) |
| depth | relative position of the answer in the document, 0..1 (per-query rows; null if unknown) |
| depth_bucket | "0.0-0.2", ... (per-query and per-bucket rows; null for rows over all depths) |
| query_id | per-query rows; null for aggregate rows |
| metric | ndcg_at_1, ndcg_at_10, mrr_at_10, recall_at_1, recall_at_10, ... |
| value | the number |
| candidates | per-query rows: documents the query was ranked against (chance nDCG@1 is 1/candidates) |
| encoded_length | per-query rows: text tokens of the relevant document the model actually encoded (after truncation; one copy under echo; the whole document under chunked) |
| answer_offset | per-query rows: token offset of the answer in the relevant document (null if the task does not say) |
| answer_visible | per-query rows: whether the whole answer lies inside the encoded tokens (under chunked: inside one chunk; null if unknown) |

Aggregate rows (query_id null) hold means: per (task, length, depth_bucket),
per (task, length), and per task over lengths (length null: LongEmbed's average).
Analysis should compute from per-query rows; aggregates are for quick looks.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

import pandas as pd

from study.paths import file_lock

log = logging.getLogger(__name__)

IDENTITY = ["study", "trial", "run_id", "run_name", "created_at"]
ABLATION = ["backbone", "encoding", "attention", "pooling", "seed"]
MEASUREMENT = ["task", "length", "depth", "depth_bucket", "query_id", "metric", "value", "candidates",
               "encoded_length", "answer_offset", "answer_visible"]
COLUMNS = IDENTITY + ABLATION + MEASUREMENT
DTYPES = {
    "study": "string", "trial": "int64", "run_id": "string", "run_name": "string", "created_at": "string",
    "backbone": "string", "encoding": "string", "attention": "string", "pooling": "string", "seed": "int64",
    "task": "string", "length": "Int64", "depth": "Float64", "depth_bucket": "string", "query_id": "string",
    "metric": "string", "value": "float64", "candidates": "Int64", "encoded_length": "Int64", "answer_offset": "Int64",
    "answer_visible": "boolean",
}
TABLE = "results.parquet"
# The W&B pointer, written once the run's W&B record has closed: with TABLE, the mark of a finished run.
POINTER = "wandb.json"
# The ablation columns and the config keys (CLI, sweep spaces, Optuna params, W&B config) they hold.
ABLATION_KEYS = {"backbone": "model.backbone", "encoding": "model.encoding", "attention": "model.attention",
                 "pooling": "model.pooling", "seed": "seed"}


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def run_identity(run_id: str, run_name: str, seed: int, model=None, **given) -> dict:
    """The identity and ablation columns of a run's rows, for every producer (train, eval, probes, pretrain).

    `model`: the run's `model` config, whose backbone/encoding/attention/pooling fill the ablation columns;
    without it (BM25, pretraining) they come in `given`, which also sets `study` and `trial` for sweep trials.
    """
    row = {"study": "", "trial": -1, "run_id": run_id, "run_name": run_name, "created_at": utc_now(), "seed": seed}
    if model is not None:
        row.update({col: model[key.split(".", 1)[1]] for col, key in ABLATION_KEYS.items() if key.startswith("model.")})
    unknown = set(given) - set(COLUMNS)
    if unknown:
        raise ValueError(f"run_identity: {sorted(unknown)} are not identity or ablation columns")
    return {**row, **given}


def swept_columns(params: dict) -> dict:
    """A sweep trial's parameters that are not ablation columns already: its extra table columns."""
    return {k: v for k, v in params.items() if k not in ABLATION_KEYS.values()}


def make_table(rows: list[dict], identity: dict, extra: dict | None = None) -> pd.DataFrame:
    """Measurement rows + the run's identity/ablation (+ swept parameters) -> a typed table."""
    df = pd.DataFrame(rows, columns=MEASUREMENT)
    for key, value in {**identity, **(extra or {})}.items():
        df[key] = value
    for col in COLUMNS:
        if col not in df:
            df[col] = None
    extra_cols = [c for c in df.columns if c not in COLUMNS]
    df = df[COLUMNS + sorted(extra_cols)]
    return df.astype({k: v for k, v in DTYPES.items() if k in df})


def write_table(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)  # atomic: readers see the old table or the new one, never half
    return path


def read_results(*paths: str | Path) -> pd.DataFrame:
    """Read tables from files, run folders or study folders (the union of their trials)."""
    frames = []
    for p in map(Path, paths):
        if p.is_file():
            files = [p]
        elif (p / "trials").is_dir():
            # trials/<n>/ only: trials/<n>.stale-<time>/ are folders moved aside (study/sweep/dispatch.py)
            files = sorted(f for f in (p / "trials").glob(f"*/{TABLE}") if f.parent.name.isdigit())
        elif (p / TABLE).is_file():
            files = [p / TABLE]
        else:
            files = sorted(p.glob(f"**/{TABLE}"))
        frames += [pd.read_parquet(f) for f in files]
    if not frames:
        raise FileNotFoundError(f"no {TABLE} under {', '.join(map(str, paths))}")
    return pd.concat(frames, ignore_index=True)


def union_table(study_dir: Path, tables: list[tuple[object, Path]]) -> Path | None:
    """<study_dir>/results.parquet = the union of the first readable table of each key, in order, written
    under a lock (sweep workers race). A table that cannot be read is skipped with a warning: another run's bad
    file never fails this one, nor `study status`."""
    frames, keys = [], set()
    for key, path in tables:
        if key in keys:
            continue
        try:
            frames.append(pd.read_parquet(path))
        except Exception as e:  # noqa: BLE001 - corrupt, missing, unreadable
            log.warning("study table: skipping %s: it cannot be read (%s)", path, type(e).__name__)
            continue
        keys.add(key)
    if not frames or not study_dir.is_dir():
        return None
    with file_lock(study_dir / ".results.lock"):
        table = pd.concat(frames, ignore_index=True)
        table = table.sort_values(["trial", "task"], kind="stable").reset_index(drop=True)
        return write_table(table, study_dir / TABLE)
