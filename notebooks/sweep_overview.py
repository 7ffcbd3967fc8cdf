# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Sweep overview
#
# One row per trial, the effect of each swept parameter, Optuna's parameter importances, and the
# pretraining loss curves of the backbones (when the study pretrained them). All logic lives in `analysis/`.

# %% tags=["parameters"]
results = []  # results tables, run folders or study folders; empty -> `study` or W&B
study = ""  # a study name under runs/ (used when `results` is empty)
wandb_project = ""  # ENTITY/PROJECT to read from the W&B public API instead
wandb_group = ""  # the study's W&B group
optuna_storage = ""  # Optuna storage (URL or SQLite path); empty -> trials rebuilt from the results table
output_dir = "reports"  # figures/ and tables/ are written here
companions = True  # also load probe tables and pretraining curves found next to local results
metric = "ndcg_at_1"  # the objective when rebuilt from results: mean over lengths, then tasks

# %%
from IPython.display import Markdown, display

from analysis import plots, sweep
from analysis.load import parameter_columns
from analysis.report import load_results, save_table, show

df = load_results(results, study, wandb_project, wandb_group, companions=companions)
loaded = None
if optuna_storage:
    loaded = sweep.load_optuna_study(optuna_storage, study or None)
    trials = sweep.trials_from_optuna(loaded)
    params = sweep.trial_parameters(trials)
    source = f"Optuna storage `{optuna_storage}` (study `{loaded.study_name}`)"
else:
    trials = sweep.trials_from_results(df, metric)
    params = [p for p in parameter_columns(df) if p in trials]
    source = f"the results table (objective: {metric}, mean over lengths then tasks)"
optuna_study = sweep.importance_study(loaded, trials, params)
display(Markdown(f"## Trials\n{len(trials)} trials from {source}; states: "
                 + ", ".join(f"{k} {v}" for k, v in trials.state.astype(str).value_counts().items()) + "."))
save_table(trials, output_dir, "trials")
display(trials)

# %% [markdown]
# ## Parameter effects
# Mean objective per value of each parameter that varies (completed trials; error bars: std over trials).

# %%
effects = sweep.parameter_effects(trials, params)
save_table(effects, output_dir, "parameter_effects")
display(effects.round(4))
show(sweep.plot_parameter_effects(effects), output_dir, "parameter_effects",
     missing="No parameter varies across completed trials.")

# %% [markdown]
# ## Parameter importances (Optuna, fANOVA)

# %%
importance, reason = sweep.importances(optuna_study)
display(Markdown(f"Importances: {reason}."))
if importance is not None:
    show(sweep.plot_importances(optuna_study), output_dir, "parameter_importances")

# %% [markdown]
# ## Pretraining loss curves

# %%
show(plots.plot_pretraining(df), output_dir, "pretraining_loss",
     missing="No pretraining curves in these results (task `pretrain` rows with a `step` column).")
