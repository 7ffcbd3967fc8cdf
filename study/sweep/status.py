"""`study status STUDY`: what ran, what is running, what failed and why; rebuilds the study table."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState

from study.errors import ConfigError
from study.results import POINTER, TABLE, union_table
from study.sweep.spec import trial_cell
from study.sweep.storage import default_url, mask_url, open_storage


def status_url(name: str, storage: str | None, output_dir: str = "runs") -> str:
    if storage:
        return storage
    db = Path(output_dir) / name / "optuna.db"
    if not db.is_file():
        raise ConfigError(f"no study {name!r} at {db}; give its storage with --storage URL "
                          "(sqlite:///path/optuna.db, postgresql://..., or a journal file)")
    return default_url(db.parent.resolve())


def load_study(name: str, url: str) -> optuna.Study:
    storage = open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise ConfigError(f"no study {name!r} in {mask_url(url)}; studies there: {', '.join(names) or 'none'}") from None


def trial_rows(study: optuna.Study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        ua, sa = t.user_attrs, t.system_attrs
        params = sa.get("fixed_params") or t.params
        note = ""
        if "skipped" in ua:
            note = f"skipped: {ua['skipped']}"
        elif t.state == TrialState.FAIL:
            note = ua.get("fail_reason") or "worker died (no heartbeat)"
        elif t.state == TrialState.PRUNED:
            note = ua.get("pruned", "pruned")
        if sa.get("retry_history"):
            note = f"retry of {sa['retry_history'][-1]}" + (f"; {note}" if note else "")
        duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        rows.append({
            "trial": t.number, "state": t.state.name,
            "params": " ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in params.items()),
            "value": t.value if t.value is not None else float("nan"), "seconds": duration, "note": note,
        })
    return rows


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def incomplete_cells(study: optuna.Study) -> int:
    """Grid cells (params incl. seed) with no COMPLETE trial."""
    cells: dict[str, bool] = {}
    for t in study.get_trials(deepcopy=False):
        if "skipped" in t.user_attrs:
            continue
        key = trial_cell(t)
        cells[key] = cells.get(key, False) or t.state == TrialState.COMPLETE
    return sum(1 for done in cells.values() if not done)


def rebuild_study_table(study_dir: Path, study: optuna.Study) -> Path | None:
    """runs/<study>/results.parquet = the tables of COMPLETE trials, one trial per grid cell (the lowest-numbered
    one whose table can be read)."""
    grid = (study.user_attrs.get("sweep_spec") or {}).get("sampler") == "grid"
    tables = [(trial_cell(t) if grid else t.number, Path(t.user_attrs.get("run_dir") or study_dir / "trials" / str(t.number)) / TABLE)
              for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)]
    return union_table(study_dir, tables)


def print_status(name: str, url: str) -> int:
    """Print the trial table and counts; exit code 1 if a grid cell has no COMPLETE trial."""
    import pandas as pd


    study = load_study(name, url)
    rows = trial_rows(study)
    spec = study.user_attrs.get("sweep_spec", {})
    objective = study.user_attrs.get("objective", "value")
    print(f"study {name}  ({mask_url(url)}; sampler {spec.get('sampler', '?')}; "
          f"objective {objective}, {study.direction.name.lower()})")
    if rows:
        df = pd.DataFrame(rows).rename(columns={"value": objective})
        with pd.option_context("display.max_colwidth", 80, "display.width", 200):
            print(df.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}"))
    counts = Counter(r["state"] for r in rows)
    skipped = sum(1 for r in rows if r["note"].startswith("skipped"))
    print("states: " + ", ".join(f"{s.name} {counts.get(s.name, 0)}" for s in TrialState)
          + (f" (of which {skipped} skipped duplicates)" if skipped else ""))
    table = None
    if study.user_attrs.get("study_dir"):
        try:
            table = rebuild_study_table(Path(study.user_attrs["study_dir"]), study)
        except Exception as e:  # noqa: BLE001 - the status table is shown whatever happens to the study table
            print(f"could not rebuild the study table: {type(e).__name__}: {e}")
    if table:
        print(f"results table: {table}")
    if spec.get("sampler") == "grid":
        missing = incomplete_cells(study)
        if missing:
            print(f"{missing} grid cell(s) without a COMPLETE trial: re-run `study sweep` to retry them")
            return 1
    return 0


def wandb_dirs(study: optuna.Study) -> list[Path]:
    """The offline W&B run folders of COMPLETE trials: the results to upload (`| xargs wandb sync`).
    Failed, interrupted, pruned and skipped attempts are left out."""
    out = []
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number):
        run_dir = Path(t.user_attrs.get("run_dir", ""))
        if not t.user_attrs.get("run_dir") or not run_dir.is_dir():
            continue
        out += _run_wandb_dirs(run_dir)
    return out


def _run_wandb_dirs(run_dir: Path) -> list[Path]:
    """The W&B run wandb.json points to (the run that finished), in this folder or under WANDB_DIR."""
    import json

    try:
        pointer = json.loads((run_dir / POINTER).read_text())
    except (OSError, ValueError):
        return []
    if pointer.get("mode") != "offline" or not pointer.get("run_id"):
        return []
    found = sorted((run_dir / "wandb").glob(f"offline-run-*-{pointer['run_id']}"))
    if not found and pointer.get("dir") and Path(pointer["dir"]).is_dir():
        found = [Path(pointer["dir"])]
    return found[-1:]


def print_wandb_dirs(name: str, url: str) -> int:
    for path in wandb_dirs(load_study(name, url)):
        print(path)
    return 0
