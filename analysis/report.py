"""`study report`: execute the analysis notebooks on a study's results, render HTML, log to W&B.

The notebooks' source of truth is the jupytext percent script notebooks/<name>.py;
the committed .ipynb is generated from it (`jupytext --to ipynb`, a test keeps
them in sync) and the report regenerates it too, so editing the .py is enough.

Layout of the output folder (default reports/):
    <name>.html                  the executed notebook, code hidden
    <name>.ipynb                 the executed notebook (open it in Jupyter)
    figures/*.png, tables/*.csv  what the notebooks saved
    summary.md                   the generated plain-language summary
    data/results.parquet         the exact table analysed (a W&B download is frozen here)
    wandb.json                   pointer to the `analysis` W&B run (offline by default)
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from analysis.load import evaluation_units, load_local, load_wandb, study_paths
from analysis.plots import save_figure
from study.config import load_config
from study.errors import ConfigError
from study.evaluate import MEASURES
from study.results import POINTER, write_table

log = logging.getLogger(__name__)

NOTEBOOKS = ("bidirectionality_long_context", "sweep_overview")
NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
KERNEL = "python3"


# --------------------------------------------------------------------------- inputs


def load_results(results=(), study: str | None = None, wandb_project: str | None = None,
                 wandb_group: str | None = None, runs_dir: str | Path = "runs", companions: bool = True) -> pd.DataFrame:
    """The one loader of notebooks and CLI: local tables/folders, runs/<study>, or W&B (in that order).

    `companions`: also add probe tables and pretraining curves found next to local results
    (analysis.load.load_local); the report turns it off for the table it has already frozen.
    """

    if isinstance(results, (str, Path)):
        results = [results]
    if results:
        return load_local(*results, companions=companions)
    if wandb_project:
        return load_wandb(wandb_project, wandb_group or None)
    if study:
        return load_local(study_paths(study, runs_dir)[0], companions=companions)
    raise ConfigError("no results: give results paths, a study name, or a W&B project")


def resolve_inputs(results=(), study: str | None = None, wandb_project: str | None = None,
                   runs_dir: str | Path = "runs", optuna_storage: str | None = None) -> tuple[list[Path], str | None]:
    """Check the inputs exist before any work; returns (result paths, Optuna storage or None)."""

    if not (results or study or wandb_project):
        raise ConfigError("study report: give --study NAME, --results PATH ..., or --wandb ENTITY/PROJECT")
    paths = [Path(p) for p in results or []]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ConfigError(f"--results: {', '.join(missing)} does not exist")
    if study and not paths and not wandb_project:
        table, storage = study_paths(study, runs_dir)
        if not table.exists():
            known = sorted(p.name for p in Path(runs_dir).iterdir() if p.is_dir()) if Path(runs_dir).is_dir() else []
            raise ConfigError(f"--study {study!r}: {table} does not exist; studies under {runs_dir}/: {known}")
        paths = [table]
        optuna_storage = optuna_storage or (str(storage) if storage else None)
    if wandb_project and "/" not in wandb_project:
        raise ConfigError(f"--wandb {wandb_project!r}: expected ENTITY/PROJECT")
    return paths, optuna_storage


# --------------------------------------------------------------------------- notebooks


def notebook_from_script(name: str, out: Path) -> Path:
    """notebooks/<name>.py (jupytext percent) -> an .ipynb at `out`, with the python3 kernelspec."""
    import jupytext

    nb = jupytext.read(NOTEBOOK_DIR / f"{name}.py")
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    out.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(nb, out, fmt="ipynb")
    return out


@contextmanager
def this_python_kernel():
    """Make the `python3` kernel this interpreter, whatever kernels the user has installed.

    jupyter_client searches JUPYTER_PATH first, so a private kernelspec there wins
    over a user-level `python3` that might point at another Python; no install needed.
    """
    old = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "MPLBACKEND", "PYDEVD_DISABLE_FILE_VALIDATION")}
    with tempfile.TemporaryDirectory(prefix="study-kernel-") as tmp:
        spec = Path(tmp) / "kernels" / KERNEL
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (study)", "language": "python"}))
        os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [tmp, old["JUPYTER_PATH"]]))
        os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
        os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
        try:
            yield KERNEL
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def execute(name: str, out_dir: Path, parameters: dict, cwd: Path | None = None, timeout: int = 1800) -> Path:
    """Run one notebook with papermill (parameters injected after its `parameters` cell)."""
    import papermill

    source = notebook_from_script(name, out_dir / "notebooks" / f"{name}.ipynb")
    executed = out_dir / f"{name}.ipynb"
    with this_python_kernel() as kernel:
        papermill.execute_notebook(str(source), str(executed), parameters=parameters, kernel_name=kernel,
                                   cwd=str(cwd or Path.cwd()), progress_bar=False, log_output=False,
                                   execution_timeout=timeout)
    return executed


def render_html(executed: Path) -> Path:
    """Executed notebook -> standalone HTML (figures embedded, code cells hidden)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    html = executed.with_suffix(".html")
    html.write_text(body, encoding="utf-8")
    return html


# --------------------------------------------------------------------------- W&B


def log_to_wandb(out_dir: Path, project: str, group: str | None, name: str, entity: str | None = None) -> dict:
    """Log the figures, tables, summary and HTML as one W&B run with job_type "analysis".

    Offline unless WANDB_MODE says otherwise; files under WANDB_DIR or the report
    folder (study/tracking.py's conventions). Upload later with `wandb sync`.
    """
    import wandb

    mode = os.environ.get("WANDB_MODE") or "offline"
    wdir = Path(os.environ.get("WANDB_DIR") or out_dir)
    wdir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, entity=entity, group=group, name=name, job_type="analysis", dir=str(wdir),
                     mode=mode, reinit="create_new",
                     settings=wandb.Settings(console="off", x_disable_stats=True, silent=True))
    payload = {f"figures/{p.stem}": wandb.Image(str(p)) for p in sorted((out_dir / "figures").glob("*.png"))}
    payload.update({f"tables/{p.stem}": wandb.Table(dataframe=pd.read_csv(p).astype(str))
                    for p in sorted((out_dir / "tables").glob("*.csv"))})
    payload.update({f"report/{p.stem}": wandb.Html(p.read_text(encoding="utf-8"))
                    for p in sorted(out_dir.glob("*.html"))})
    run.log(payload)
    summary = out_dir / "summary.md"
    if summary.is_file():
        run.summary["summary"] = summary.read_text()
    pointer = {"run_id": run.id, "name": run.name, "project": run.project, "group": group, "mode": mode,
               "dir": str(Path(run.dir).parent) if run.dir else None}
    run.finish()
    (out_dir / POINTER).write_text(json.dumps(pointer, indent=2))
    return pointer


# --------------------------------------------------------------------------- the whole report


def build_report(results=(), study: str | None = None, wandb_project: str | None = None,
                 wandb_group: str | None = None, out_dir: str | Path = "reports", runs_dir: str | Path = "runs",
                 optuna_storage: str | None = None, metric: str = "mrr_at_10", correction: str = "holm",
                 n_resamples: int = 2000, log_wandb: bool = True) -> dict:
    """Validate inputs, freeze the table, run both notebooks, render HTML, log to W&B. Returns the paths."""

    if metric not in MEASURES:
        raise ConfigError(f"--metric {metric!r}: valid options are {', '.join(MEASURES)}")
    if n_resamples < 100:
        raise ConfigError(f"--resamples {n_resamples}: use at least 100 bootstrap resamples")
    if correction not in ("holm", "bh"):
        raise ConfigError(f"--correction {correction!r}: valid options are holm, bh")
    missing = [m for m in ("papermill", "jupytext", "nbconvert", "ipykernel") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"study report needs {', '.join(missing)}: pip install -e '.[analysis]'")
    paths, storage = resolve_inputs(results, study, wandb_project, runs_dir, optuna_storage)
    out = Path(out_dir)
    df = load_results(paths, None, None if paths else wandb_project, wandb_group, runs_dir)

    if evaluation_units(df, metric).empty:
        raise ConfigError(f"no {metric} evaluation rows in {', '.join(map(str, paths)) or wandb_project}")
    table = write_table(df, out / "data" / "results.parquet")
    name = study or wandb_group or (df.study.dropna().iloc[0] if df.study.notna().any() else "") or "study"
    params = {"results": [str(table.resolve())], "study": str(name), "output_dir": str(out.resolve()),
              "metric": metric, "companions": False}
    reports = {}
    for nb in NOTEBOOKS:
        extra = ({"correction": correction, "n_resamples": n_resamples} if nb == NOTEBOOKS[0]
                 else {"optuna_storage": str(Path(storage).resolve()) if storage and "://" not in storage
                       else (storage or "")})
        log.info("executing notebook %s", nb)
        reports[nb] = render_html(execute(nb, out, {**params, **extra}))
    pointer = None
    if log_wandb:
        entity, _, project = (wandb_project or "").rpartition("/")
        pointer = log_to_wandb(out, project or _default_project(), str(name), f"report-{name}", entity or None)
    return {"html": reports, "figures": sorted((out / "figures").glob("*.png")), "table": table, "wandb": pointer}


def _default_project() -> str:
    """The project of the default config (where `study train` logs)."""

    return load_config(None, []).wandb.project


# --------------------------------------------------------------------------- notebook helpers


def show(fig, output_dir: str | Path, name: str, missing: str = "") -> None:
    """In a notebook: save `fig` as <output_dir>/figures/<name>.png, display it once, close it.

    `fig` None (nothing to plot) displays the `missing` note instead. Returns None so a
    notebook cell ending in show(...) prints nothing else.
    """
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display


    if fig is None:
        if missing:
            display(Markdown(f"*{missing}*"))
        return
    save_figure(fig, Path(output_dir) / "figures", name)
    display(fig)
    plt.close(fig)


def save_table(df: pd.DataFrame, output_dir: str | Path, name: str) -> Path:
    """Save a table as <output_dir>/tables/<name>.csv (logged to W&B by the report)."""
    path = Path(output_dir) / "tables" / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path)
    return path
