"""Synthetic results tables with known answers, for the analysis tests (generated in code, never committed).

Per-query scores are 0/1 (like nDCG@1): query q of seed s is a hit when a
shared uniform draw u[s, q] falls below the cell's hit probability, so
bidirectional and causal runs of the same seed are paired on the same queries
and the planted effect is exactly the difference of probabilities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from study.evaluate import aggregate, bucket_label
from study.results import make_table, write_table

LENGTHS = [256, 512, 1024, 2048]


def make_results(effect: float = 0.3, long_from: int = 1024, base: float = 0.45, seeds=(1, 2, 3),
                 n_queries: int = 40, lengths=LENGTHS, tasks=("passkey", "needle"), backbones=("tiny-qwen2",),
                 poolings=("mean",), study: str = "fixture", rng_seed: int = 0, extras: bool = False,
                 shared_draws: bool = True) -> pd.DataFrame:
    """A study table: bidirectional hit probability = base + effect on lengths >= long_from, else base.

    shared_draws=False gives each run its own draws (paired runs then differ by noise only where effect=0).
    """
    rng = np.random.default_rng(rng_seed)
    frames, trial = [], 0
    for backbone in backbones:
        for pooling in poolings:
            for seed in seeds:
                draws = {(t, L): rng.random(n_queries) for t in tasks for L in lengths}  # shared by attentions
                for attention in ("bidirectional", "causal"):
                    if not shared_draws:
                        draws = {key: rng.random(n_queries) for key in draws}
                    rows = []
                    for (task, length), u in draws.items():
                        p = base + (effect if attention == "bidirectional" and length >= long_from else 0.0)
                        for q in range(n_queries):
                            depth = (q + 0.5) / n_queries
                            mrr = 1.0 if u[q] < p else (0.5 if u[q] < p + 0.2 else 0.1)
                            for metric, value in (("ndcg_at_1", float(u[q] < p)), ("ndcg_at_10", float(u[q] < p + 0.2)),
                                                  ("mrr_at_10", mrr)):
                                rows.append(dict(task=task, length=length, depth=depth,
                                                 depth_bucket=bucket_label(depth, 5), query_id=f"{task}-{length}-q{q}",
                                                 metric=metric, value=value))
                    rows += aggregate(rows)
                    identity = dict(study=study, trial=trial, run_id=f"r{trial:03d}", run_name=f"trial-{trial}",
                                    created_at="2026-01-01T00:00:00+00:00", backbone=backbone, attention=attention,
                                    pooling=pooling, seed=seed)
                    frames.append(make_table(rows, identity, {"optim.lr": 1e-4 if seed % 2 else 5e-5}))
                    trial += 1
    df = pd.concat(frames, ignore_index=True)
    if extras:
        df = pd.concat([df, pretrain_rows(), probe_rows(study)], ignore_index=True)
    return df


def pretrain_rows(study: str = "", backbone: str = "tiny-qwen2") -> pd.DataFrame:
    """Loss curves of two tiny pretrainings, shaped like study/pretrain's table (length = sequence length,
    Int64 `step`, `objective`)."""
    frames = []
    for objective, attention in (("autoregressive", "causal"), ("masked_diffusion", "bidirectional")):
        steps = np.repeat(np.arange(0, 100, 10), 2)
        metrics = ["train_loss", "val_loss"] * 10
        rows = [dict(task="pretrain", length=512, depth=None, depth_bucket=None, query_id=None, metric=m,
                     value=5.0 * np.exp(-s / 50) + (1.5 if objective == "masked_diffusion" else 1.0)
                     + (0.1 if m == "val_loss" else 0.0))
                for s, m in zip(steps, metrics)]
        identity = dict(study=study, trial=-1, run_id=f"pre-{objective}", run_name=f"pretrain-{objective}",
                        created_at="2026-01-01T00:00:00+00:00", backbone=f"{backbone}-{objective}",
                        attention=attention, pooling=None, seed=0)
        t = make_table(rows, identity, {"objective": objective})
        t["step"] = pd.array(steps, dtype="Int64")
        frames.append(t)
    return pd.concat(frames, ignore_index=True)


def probe_rows(study: str = "fixture") -> pd.DataFrame:
    """Rows shaped like study/probes.py: attention distance per length (per layer + layer-null average) and
    context sensitivity per document and relative position (+ aggregates)."""
    frames = []
    for attention in ("bidirectional", "causal"):
        rows, layers = [], []
        for length in (256, 1024):
            for layer in (0, 1, None):
                forward = 0.0 if attention == "causal" else 0.2 + 0.05 * (layer or 0.5)
                spread = 0.6 + 0.1 * (layer or 0.5) + 0.1 * (attention == "bidirectional")
                for metric, value in (("forward_mass_50", forward), ("far_mass_D64", 0.1 + length / 1e4),
                                      ("entropy_norm", spread)):
                    rows.append(dict(task="probe/attention_distance", length=length, metric=metric, value=value))
                    layers.append(layer)
            for depth in (0.1, 0.5, 0.9):
                after = 0.0 if attention == "causal" else 0.3 * (1 - depth)
                for doc in range(2):
                    rows.append(dict(task="probe/context_sensitivity", length=length, depth=depth,
                                     query_id=f"d{doc}", metric="state_change_after", value=after))
                    layers.append(None)
                rows.append(dict(task="probe/context_sensitivity", length=length, depth=depth,
                                 metric="state_change_after", value=after))
                layers.append(None)
        identity = dict(study=study, trial=-1, run_id=f"probe-{attention}", run_name=f"probe-{attention}",
                        created_at="2026-01-01T00:00:00+00:00", backbone="tiny-qwen2", attention=attention,
                        pooling="mean", seed=1)
        t = make_table(rows, identity)
        t["layer"] = pd.array(layers, dtype="Int64")
        frames.append(t)
    return pd.concat(frames, ignore_index=True)


def write_study(root: Path, df: pd.DataFrame, study: str = "fixture", optuna_db: bool = False) -> Path:
    """runs-like layout: <root>/<study>/results.parquet (+ optuna.db with one trial per evaluation run)."""
    folder = root / study
    write_table(df, folder / "results.parquet")
    if optuna_db:
        import optuna

        from analysis.sweep import trials_from_results

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        s = optuna.create_study(study_name=study, storage=f"sqlite:///{folder / 'optuna.db'}", direction="maximize")
        trials = trials_from_results(df)
        dists = {"model.attention": optuna.distributions.CategoricalDistribution(["bidirectional", "causal"]),
                 "model.pooling": optuna.distributions.CategoricalDistribution(sorted(set(trials.pooling))),
                 "seed": optuna.distributions.CategoricalDistribution(sorted(int(x) for x in set(trials.seed)))}
        s.add_trials([optuna.trial.create_trial(
            params={"model.attention": r.attention, "model.pooling": r.pooling, "seed": int(r.seed)},
            distributions=dists, value=float(r.objective)) for r in trials.itertuples()])
    return folder
