"""Load results into one DataFrame schema: local tables, study folders, or the W&B public API.

The schema is the results table of study/results.py. Whatever the source, the
frame leaving this module has every column of `study.results.COLUMNS` with its
dtype, plus any extra (swept-parameter, `step`, `objective`) columns, so the
statistics and plots never care where the numbers came from.

W&B runs are read in this order of preference (the first that exists wins):
1. a logged artifact of type "results" holding `results.parquet` (per-query rows:
   full intervals and paired tests);
2. the run's `eval/results` table (aggregate rows only, logged by study.train;
   intervals then reflect seeds only);
3. the run's summary keys `eval/<task>[/<length>]/<metric>` (aggregates).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from study.backbones.index import pretrained_folder
from study.results import ABLATION, ABLATION_KEYS, COLUMNS, DTYPES, TABLE, read_results

# Strings that a table logged with `.astype(str)` uses for missing values.
_MISSING = {"", "None", "nan", "NaN", "<NA>", "NaT", "null"}


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Give any results-like frame the local schema: all columns, their dtypes, missing values as NA.

    Extra columns (swept parameters, `step`, ...) are kept; text that parses
    entirely as numbers becomes numeric, because W&B tables arrive as strings.
    """
    df = df.copy()
    for col in df.columns:
        if df[col].dtype == object or pd.api.types.is_string_dtype(df[col]):
            df[col] = df[col].map(lambda v: None if isinstance(v, str) and v.strip() in _MISSING else v)
    for col in COLUMNS:
        if col not in df:
            df[col] = None
    for col, dtype in DTYPES.items():
        if dtype in ("int64", "Int64", "Float64", "float64"):
            df[col] = pd.to_numeric(df[col], errors="coerce")
        if dtype == "int64":
            dtype = "Int64"  # tolerate missing trial/seed from foreign sources
        df[col] = df[col].astype(dtype)
    # Tables written before model.encoding existed read every model the text once: encoding `full`.
    df.loc[df.encoding.isna() & df.attention.notna(), "encoding"] = "full"
    for col in [c for c in df.columns if c not in COLUMNS]:
        df[col] = _maybe_numeric(df[col])
    extra = sorted(c for c in df.columns if c not in COLUMNS)
    return df[COLUMNS + extra].reset_index(drop=True)


def _maybe_numeric(s: pd.Series) -> pd.Series:
    """Numbers stored as text -> numbers; anything else unchanged."""
    if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        return s
    converted = pd.to_numeric(s, errors="coerce")
    return converted if converted.notna().sum() == s.notna().sum() else s


def load_local(*paths: str | Path, companions: bool = True) -> pd.DataFrame:
    """Tables from files, run folders or study folders (see study.results.read_results), normalised.

    With `companions`, tables that belong with the results but live elsewhere are
    added: probe rows (`probes.parquet`, written next to a run's results by `study
    probe`) under the given folders, and the pretraining curves of the study's
    backbones that were pretrained on this machine (their build folder's results.parquet).
    """
    df = read_results(*paths)
    if companions:
        extra = probe_tables(*paths) + reference_tables(*paths) + pretraining_tables(df)
        df = pd.concat([df, *extra], ignore_index=True) if extra else df
    return normalise(df)


PROBES = "probes.parquet"


def probe_tables(*paths: str | Path) -> list[pd.DataFrame]:
    """probes.parquet files under the given folders (a study table's folder counts)."""
    folders = {Path(p) if Path(p).is_dir() else Path(p).parent for p in paths
               if Path(p).is_dir() or Path(p).name == TABLE}
    files = sorted({f for folder in folders for f in folder.glob(f"**/{PROBES}")})
    return [pd.read_parquet(f) for f in files]


REFERENCE = "reference"


def reference_tables(*paths: str | Path) -> list[pd.DataFrame]:
    """Reference rows (BM25 on the same documents) that `study demo` writes to <study>/reference/*/."""
    folders = {Path(p) if Path(p).is_dir() else Path(p).parent for p in paths
               if Path(p).is_dir() or Path(p).name == TABLE}
    files = sorted({f for folder in folders for f in (folder / REFERENCE).glob(f"*/{TABLE}")})
    return [pd.read_parquet(f) for f in files]


def pretraining_tables(df: pd.DataFrame) -> list[pd.DataFrame]:
    """Loss curves of the backbones in `df` that were pretrained here and have no `pretrain` rows in it yet."""
    have = set(df.loc[df.task == "pretrain", "backbone"].dropna())
    out = []
    for name in sorted(set(df.backbone.dropna()) - have):
        folder = pretrained_folder(str(name))
        if folder is not None and (folder / TABLE).is_file():
            out.append(pd.read_parquet(folder / TABLE))
    return out


def study_paths(study: str, runs_dir: str | Path = "runs") -> tuple[Path, Path | None]:
    """`runs/<study>/results.parquet` (or the study folder itself) and its Optuna storage if present."""
    folder = Path(runs_dir) / study
    table = folder / TABLE
    storage = folder / "optuna.db"
    return (table if table.is_file() else folder), (storage if storage.is_file() else None)


# --------------------------------------------------------------------------- W&B


def load_wandb(project: str, group: str | None = None, api=None, per_page: int = 100) -> pd.DataFrame:
    """All finished runs of `entity/project` (optionally one group) as one results frame.

    `api` defaults to `wandb.Api()`; tests pass a fake with the same small surface
    (`runs(path, filters=...)`, and on each run: id, name, group, config, summary,
    created_at, job_type, logged_artifacts(), file(name)).
    """
    if api is None:
        import wandb

        api = wandb.Api()
    filters = {"group": group} if group else {}
    frames = [run_to_frame(run) for run in api.runs(project, filters=filters, per_page=per_page)
              if getattr(run, "job_type", None) not in ("analysis",)]
    frames = [f for f in frames if not f.empty]
    if not frames:
        raise FileNotFoundError(f"no runs with results in W&B project {project!r}"
                                + (f" group {group!r}" if group else ""))
    return normalise(pd.concat(frames, ignore_index=True))


def run_to_frame(run) -> pd.DataFrame:
    """One W&B public-API run -> results rows in the local schema (empty if it logged none)."""
    df = _artifact_table(run)
    if df is None:
        df = _logged_table(run, "eval/results")
    if df is None:
        df = summary_to_rows(dict(run.summary))
    if df.empty:
        return df
    return normalise(fill_identity(df, run))


def fill_identity(df: pd.DataFrame, run) -> pd.DataFrame:
    """Fill identity and ablation columns that the run's rows lack from the run itself and its config."""
    config = flatten(dict(run.config))
    known = {
        "study": getattr(run, "group", None) or config.get("study") or "",
        "trial": config.get("trial", -1),
        "run_id": run.id,
        "run_name": run.name,
        "created_at": str(getattr(run, "created_at", "") or ""),
        "backbone": config.get("model.backbone"),
        "encoding": config.get("model.encoding") or ("full" if config.get("model.backbone") else None),
        "attention": config.get("model.attention"),
        "pooling": config.get("model.pooling"),
        "seed": config.get("seed"),
    }
    df = df.copy()
    for col, value in known.items():
        if col not in df:
            df[col] = value
        else:
            missing = df[col].isna() | df[col].astype(str).isin(_MISSING)
            df[col] = df[col].astype(object)  # logged tables are text; normalise() re-types
            df.loc[missing, col] = value
    return df


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested config dict -> {"model.attention": ..., ...} (W&B keeps Lightning's nested config)."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and "value" in value and set(value) <= {"value", "desc"}:
            value = value["value"]  # the raw run-config layout {"key": {"value": ...}}
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def table_json_to_frame(payload: dict) -> pd.DataFrame:
    """A W&B table file (`{"columns": [...], "data": [[...], ...]}`) -> a DataFrame."""
    return pd.DataFrame(payload.get("data", []), columns=payload["columns"])


def summary_to_rows(summary: dict) -> pd.DataFrame:
    """Summary keys `eval/<task>/<metric>` and `eval/<task>/<length>/<metric>` -> aggregate rows."""
    rows = []
    for key, value in summary.items():
        parts = key.split("/")
        if parts[0] != "eval" or len(parts) not in (3, 4) or parts[1] == "average":
            continue
        if not isinstance(value, (int, float, np.floating)):
            continue
        length = int(parts[2]) if len(parts) == 4 and parts[2].isdigit() else None
        if len(parts) == 4 and length is None:
            continue
        rows.append({"task": parts[1], "length": length, "metric": parts[-1], "value": float(value),
                     "query_id": None, "depth": None, "depth_bucket": None})
    return pd.DataFrame(rows)


def _logged_table(run, key: str) -> pd.DataFrame | None:
    """Download the table file that the run's summary points to under `key`, if any."""
    ref = dict(run.summary).get(key)
    path = ref.get("path") if isinstance(ref, dict) else None
    if not path:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        run.file(path).download(root=tmp, replace=True)
        payload = json.loads((Path(tmp) / path).read_text())
    return table_json_to_frame(payload)


def _artifact_table(run) -> pd.DataFrame | None:
    """The run's `results` artifact (a results.parquet with per-query rows), if it logged one."""
    try:
        artifacts = list(run.logged_artifacts())
    except Exception:  # noqa: BLE001 - older runs / API errors: fall back to the logged table
        return None
    for artifact in artifacts:
        if getattr(artifact, "type", None) != "results":
            continue
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(artifact.download(root=tmp))
            files = sorted(folder.glob(f"**/{TABLE}"))
            if files:
                return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return None


# --------------------------------------------------------------------------- selections


def per_query(df: pd.DataFrame, metric: str | None = "ndcg_at_1", tasks: list[str] | None = None) -> pd.DataFrame:
    """The per-query evaluation rows (query_id set) of one metric, retrieval tasks only."""
    out = df[df.query_id.notna() & ~is_special_task(df.task)]
    if metric is not None:
        out = out[out.metric == metric]
    if tasks:
        out = out[out.task.isin(tasks)]
    return out


def aggregates(df: pd.DataFrame, metric: str = "ndcg_at_1") -> pd.DataFrame:
    """Aggregate rows per (task, length) of one metric: what a W&B-only source offers."""
    out = df[df.query_id.isna() & df.depth_bucket.isna() & df.length.notna() & ~is_special_task(df.task)]
    return out[out.metric == metric]


def is_special_task(task: pd.Series) -> pd.Series:
    """Rows that are not retrieval evaluations: pretraining curves and probes."""
    task = task.astype("string").fillna("")
    return (task == "pretrain") | task.str.startswith("probe/")


def evaluation_units(df: pd.DataFrame, metric: str = "ndcg_at_1") -> pd.DataFrame:
    """Per-query rows if there are any, else per-(task, length) aggregates treated as one 'query' each.

    The fallback keeps W&B-only studies analysable (seed-level intervals only);
    `has_per_query` tells the caller which one it got.
    """
    rows = per_query(df, metric)
    if not rows.empty:
        return rows
    agg = aggregates(df, metric).copy()
    agg["query_id"] = "all"
    return agg


def has_per_query(df: pd.DataFrame) -> bool:
    """Whether the table holds per-query rows (needed for query-level intervals and paired tests)."""
    return bool(per_query(df, None).shape[0])


def parameter_columns(df: pd.DataFrame) -> list[str]:
    """The ablation columns plus every other swept parameter (extra dotted columns).

    Tables written before study.results.swept_columns also hold a swept ablation key (`model.attention`) as
    a column; it is the `attention` column again, so it is left out (one name per parameter).
    """
    extra = [c for c in df.columns if c not in COLUMNS and "." in c and c not in ABLATION_KEYS.values()]
    return list(ABLATION) + sorted(extra)
