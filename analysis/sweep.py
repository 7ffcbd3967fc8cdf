"""Sweep overview: one row per trial, parameter effects, parameter importances.

The trial table comes from the Optuna storage when there is one (its objective
values and states are the truth), else from the results table (objective = the
LongEmbed-style average of a metric: mean over lengths, then over tasks). Either
way importances are computed by Optuna: from the loaded study, or from an
in-memory study rebuilt from the trial table, so a W&B-only study gets them too.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from analysis.load import evaluation_units, parameter_columns
from study.errors import ConfigError
from study.sweep.storage import is_journal, mask_url, open_storage

OBJECTIVE = "objective"


def load_optuna_study(storage: str, study_name: str | None = None):
    """The study in an Optuna storage: URL, SQLite path or journal file; the only one there if unnamed."""
    import optuna


    url = storage if "://" in storage or is_journal(storage) else f"sqlite:///{storage}"
    opened = open_storage(url)
    names = optuna.get_all_study_names(opened)
    if study_name not in names:
        if len(names) != 1:
            raise ConfigError(f"study {study_name!r} is not in {mask_url(url)}; studies there: {names}")
        study_name = names[0]
    return optuna.load_study(study_name=study_name, storage=opened)


def trial_params(t) -> dict:
    """A trial's parameters: suggested ones, else the cell it was enqueued with (grid sweeps)."""
    return dict(t.params) or dict(t.system_attrs.get("fixed_params") or {})


def trials_from_optuna(study) -> pd.DataFrame:
    """One row per Optuna trial: trial, state, objective (first value), seconds, parameters."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        seconds = ((t.datetime_complete - t.datetime_start).total_seconds()
                   if t.datetime_complete and t.datetime_start else None)
        rows.append({"trial": t.number, "state": t.state.name,
                     OBJECTIVE: t.values[0] if t.values else np.nan, "seconds": seconds, **trial_params(t)})
    return pd.DataFrame(rows)


def trials_from_results(df: pd.DataFrame, metric: str = "ndcg_at_1") -> pd.DataFrame:
    """One row per run: identity, parameters and the objective (mean over lengths, then tasks)."""
    rows = evaluation_units(df, metric)
    params = [c for c in parameter_columns(df) if c in rows]
    keys = ["study", "trial", "run_id", "run_name"] + params
    per_length = rows.groupby(keys + ["task", "length"], dropna=False).value.mean().reset_index()
    per_task = per_length.groupby(keys + ["task"], dropna=False).value.mean().reset_index()
    out = per_task.groupby(keys, dropna=False).value.mean().rename(OBJECTIVE).reset_index()
    out["state"] = "COMPLETE"
    return out.sort_values(["trial", "run_name"]).reset_index(drop=True)


def varying(trials: pd.DataFrame, params: list[str]) -> list[str]:
    """Parameters that take more than one value among the trials."""
    return [p for p in params if p in trials and trials[p].nunique(dropna=True) > 1]


def parameter_effects(trials: pd.DataFrame, params: list[str]) -> pd.DataFrame:
    """Mean, std and count of the objective per value of each varying parameter (completed trials)."""
    done = trials[trials.state.astype(str).str.endswith("COMPLETE") & trials[OBJECTIVE].notna()]
    out = []
    for p in varying(done, params):
        g = done.groupby(done[p].astype(str))[OBJECTIVE]
        out.append(pd.DataFrame({"parameter": p, "value": g.mean().index, "mean": g.mean().to_numpy(),
                                 "std": g.std().to_numpy(), "n": g.count().to_numpy()}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["parameter", "value", "mean",
                                                                               "std", "n"])


def study_from_trials(trials: pd.DataFrame, params: list[str], direction: str = "maximize"):
    """An in-memory Optuna study holding the completed trials, with categorical distributions."""
    import optuna

    done = trials[trials.state.astype(str).str.endswith("COMPLETE") & trials[OBJECTIVE].notna()]
    params = varying(done, params)
    dists = {p: optuna.distributions.CategoricalDistribution(sorted({_scalar(v) for v in done[p].dropna()},
                                                                     key=str)) for p in params}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction)
    study.add_trials([
        optuna.trial.create_trial(params={p: _scalar(r[p]) for p in params if not pd.isna(r[p])},
                                  distributions={p: dists[p] for p in params if not pd.isna(r[p])},
                                  value=float(r[OBJECTIVE]))
        for _, r in done.iterrows()])
    return study


def importance_study(loaded, trials: pd.DataFrame, params: list[str]):
    """The study to compute importances on: the loaded one if its trials carry suggested parameters
    (real distributions), else one rebuilt from the trial table (grid cells, results-only studies)."""
    import optuna

    if loaded is not None and any(t.params for t in loaded.get_trials(states=(optuna.trial.TrialState.COMPLETE,))):
        return loaded
    return study_from_trials(trials, params)


def trial_parameters(trials: pd.DataFrame) -> list[str]:
    """Parameter columns of a trial table from trials_from_optuna."""
    return [c for c in trials.columns if c not in ("trial", "state", OBJECTIVE, "seconds")]


def _scalar(v):
    """numpy / pandas scalars -> plain Python (Optuna's categorical choices must be)."""
    return v.item() if hasattr(v, "item") else v


def importances(study) -> tuple[dict | None, str]:
    """Optuna's (fANOVA, seeded) parameter importances, or None with the reason they cannot be computed."""
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    params = {p for t in done for p in t.params}
    if len(done) < 2:
        return None, f"needs at least 2 completed trials, got {len(done)}"
    vary = [p for p in params if len({str(t.params.get(p)) for t in done}) > 1]
    if not vary:
        return None, "no parameter takes more than one value among the completed trials"
    if len({round(v, 12) for t in done for v in (t.values or [])}) < 2:
        return None, "every completed trial has the same objective value"
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imp = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=vary, target=target)
    except (ValueError, RuntimeError) as e:
        return None, f"Optuna could not compute importances: {e}"
    return dict(imp), f"fANOVA over {len(done)} completed trials"


def plot_importances(study):
    """Optuna's own importance bar chart (optuna.visualization.matplotlib) as a Figure; None if not computable."""
    import optuna

    imp, _ = importances(study)
    if imp is None:
        return None
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    import matplotlib

    with warnings.catch_warnings(), matplotlib.rc_context():  # Optuna switches to the ggplot style globally
        warnings.simplefilter("ignore")
        ax = optuna.visualization.matplotlib.plot_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=list(imp), target=target,
            target_name=OBJECTIVE)
        fig = ax.figure
        fig.set_size_inches(6, 0.4 * len(imp) + 1.5)
        fig.tight_layout()
    return fig


def plot_parameter_effects(effects: pd.DataFrame):
    """One bar panel per parameter: mean objective per value, error bar = std over trials."""
    import matplotlib.pyplot as plt

    params = list(dict.fromkeys(effects.parameter))
    if not params:
        return None
    fig, axes = plt.subplots(1, len(params), figsize=(3.4 * len(params), 3.0), squeeze=False)
    for ax, p in zip(axes[0], params):
        g = effects[effects.parameter == p]
        ax.bar(range(len(g)), g["mean"], yerr=g["std"].fillna(0), color="tab:blue", capsize=3)
        ax.set_xticks(range(len(g)), g.value, rotation=30, fontsize=8)
        ax.set_title(p, fontsize=9)
    axes[0][0].set_ylabel(OBJECTIVE)
    fig.tight_layout()
    return fig
