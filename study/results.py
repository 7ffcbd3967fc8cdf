"""The results table: the contract between runs and analysis.

Long format, one row per measurement, Parquet. A run writes its table once, at
its end (atomically), so a killed run leaves nothing half-written. A study's
table is the union of its trials' tables.

| column | meaning |
|---|---|
| study | sweep name ("" for single runs) |
| trial | Optuna trial number (-1 if none) |
| run_id, run_name, created_at | identity of the run (created_at: UTC ISO time) |
| backbone, encoding, attention, pooling, seed | the ablation (config names model.backbone, model.encoding, model.attention, ...; encoding: full, echo or chunked, docs/encodings.md) |
| <dotted config key> | every swept parameter, as its own column (e.g. optim.lr) |
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

import os
from pathlib import Path

import pandas as pd

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
