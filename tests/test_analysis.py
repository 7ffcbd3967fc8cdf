"""analysis/: statistics with known answers, the W&B conversion, sweep tables and plots (fixture tables in code)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_fixtures import make_results, pretrain_rows, probe_rows, write_study

from analysis import load, plots, stats, sweep, text
from study.results import COLUMNS, DTYPES


@pytest.fixture(scope="module")
def planted():
    """+0.3 for bidirectional on lengths >= 1024, nothing below; 3 seeds x 40 queries x 4 lengths x 2 tasks."""
    return load.normalise(make_results(effect=0.3, rng_seed=0))


def two_sided_rows(bidirectional: np.ndarray, causal: np.ndarray, length: int = 1024) -> pd.DataFrame:
    """Per-query rows from seeds x queries arrays of scores."""
    out = []
    for attention, m in (("bidirectional", bidirectional), ("causal", causal)):
        s, q = np.indices(m.shape)
        out.append(pd.DataFrame({"backbone": "b", "pooling": "mean", "attention": attention, "seed": s.ravel() + 1,
                                 "task": "needle", "length": length, "query_id": [f"q{j}" for j in q.ravel()],
                                 "value": m.ravel()}))
    return pd.concat(out, ignore_index=True)


# ----------------------------------------------------------------- statistics


def test_planted_effect_is_detected_with_the_right_sign_and_size(planted):
    rows = load.per_query(planted)
    long = stats.long_lengths(rows.length)
    assert long == [1024, 2048]
    head = stats.paired_differences(rows[rows.length.isin(long)], ["backbone", "pooling"], n_resamples=1000)
    r = head.iloc[0]
    assert r.n_seeds == 3 and r.n_queries == 2 * 2 * 40
    assert abs(r["diff"] - 0.3) < 0.08
    assert 0 < r.ci_low < r["diff"] < r.ci_high
    assert r.p_value < 0.001 and r.significant
    by_length = stats.paired_differences(rows, ["backbone", "pooling", "task", "length"], n_resamples=500)
    short = by_length[by_length.length < 1024]
    assert (short["diff"] == 0).all() and (short.p_value == 1).all() and not short.significant.any()
    assert by_length[by_length.length >= 1024].significant.all()


def test_a_seed_dependent_difference_is_not_called_significant():
    """Every query agrees after averaging seeds (tiny permutation p), but the seeds disagree in sign: the
    two-way interval covers zero, so the verdict must not be 'significant'."""
    rng = np.random.default_rng(0)
    causal = rng.uniform(0.2, 0.8, size=(3, 60))
    shift = np.array([[0.25], [-0.15], [-0.05]])  # per-seed effect, mean +0.017
    bidirectional = causal + shift + rng.normal(0, 0.005, size=causal.shape)
    r = stats.paired_differences(two_sided_rows(bidirectional, causal), ["backbone", "pooling"],
                                 n_resamples=2000).iloc[0]
    assert r.p_adjusted < 0.001 and r.ci_low < 0 < r.ci_high
    assert not r.significant


def test_no_effect_gives_an_interval_covering_zero():
    rows = load.per_query(load.normalise(make_results(effect=0.0, shared_draws=False, rng_seed=3)))
    head = stats.paired_differences(rows, ["backbone", "pooling"], n_resamples=1000)
    r = head.iloc[0]
    assert r.ci_low < 0 < r.ci_high
    assert r.p_value > 0.05 and not r.significant


def test_sign_flip_test_is_calibrated_under_the_null():
    rng = np.random.default_rng(7)
    pvalues = [stats.paired_test(stats.paired_matrix(two_sided_rows(rng.random((2, 30)), rng.random((2, 30))))[2],
                                 n_permutations=2000, seed=i) for i in range(40)]
    assert 0.0 <= np.mean(np.array(pvalues) < 0.05) <= 0.15
    assert 0.35 < np.mean(pvalues) < 0.65  # uniform p-values average 0.5


def test_exact_sign_flip_p_values():
    assert stats.sign_flip_pvalue(np.ones(5)) == pytest.approx(2 / 32)  # only all-plus and all-minus are as extreme
    assert stats.sign_flip_pvalue(np.zeros(8)) == 1.0
    assert stats.sign_flip_pvalue(np.array([1.0, -1.0])) == 1.0


def test_bootstrap_interval_has_the_width_of_a_known_distribution():
    values = np.random.default_rng(0).normal(0, 1, size=400)
    lo, hi = stats.bootstrap_ci(values, n_resamples=2000)
    assert hi - lo == pytest.approx(2 * 1.96 / np.sqrt(400), rel=0.15)
    assert lo < values.mean() < hi
    # One seed: the two-way bootstrap is the query bootstrap.
    rows = two_sided_rows(values[None, :], values[None, :])
    cell = stats.cell_means(rows[rows.attention == "causal"], ["attention"], n_resamples=2000).iloc[0]
    assert cell.ci_high - cell.ci_low == pytest.approx(hi - lo, rel=0.15)


def test_seed_variance_widens_the_interval():
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.1, size=(4, 200))
    alike = stats.cell_matrix(two_sided_rows(noise, noise).query("attention == 'causal'"))
    apart = stats.cell_matrix(two_sided_rows(noise + np.array([[-1], [-0.5], [0.5], [1]]), noise)
                              .query("attention == 'bidirectional'"))
    w = [np.subtract(*stats.percentile_interval(stats.two_way_bootstrap(m))[::-1]) for m in (alike, apart)]
    assert w[1] > 5 * w[0]


def test_cells_weight_each_length_equally():
    rows = pd.concat([two_sided_rows(np.ones((1, 10)), np.ones((1, 10)), length=256),
                      two_sided_rows(np.zeros((1, 30)), np.zeros((1, 30)), length=512)])
    cell = stats.cell_means(rows[rows.attention == "causal"], ["attention"], n_resamples=200).iloc[0]
    assert cell["mean"] == pytest.approx(0.5)  # not 10/40
    assert cell.n_queries == 40


def test_holm_and_bh_corrections():
    p = np.array([0.01, 0.04, 0.03, np.nan])
    holm = stats.adjust_pvalues(p, "holm")
    np.testing.assert_allclose(holm[:3], [0.03, 0.06, 0.06])
    assert np.isnan(holm[3])
    np.testing.assert_allclose(stats.adjust_pvalues(p, "bh")[:3], [0.03, 0.04, 0.04])
    from study.errors import ConfigError

    with pytest.raises(ConfigError, match="holm"):
        stats.adjust_pvalues(p, "bonferroni")


def test_summary_table_in_the_papers_layout(planted):
    rows = load.per_query(planted)
    scores, intervals = stats.summary_table(rows, n_resamples=200)
    assert list(scores.columns) == ["needle", "passkey", "average"]
    assert list(scores.index.names) == ["backbone", "attention", "pooling"]
    expected = rows.groupby(["attention", "task", "length"]).value.mean().groupby(["attention", "task"]).mean() * 100
    for (attention, task), v in expected.items():
        assert scores.loc[("tiny-qwen2", attention, "mean"), task] == pytest.approx(v)
    np.testing.assert_allclose(scores.average, scores[["needle", "passkey"]].mean(axis=1))
    assert scores.loc[("tiny-qwen2", "bidirectional", "mean"), "average"] > \
        scores.loc[("tiny-qwen2", "causal", "mean"), "average"]
    assert intervals.shape == scores.shape
    lo, hi = map(float, intervals.loc[("tiny-qwen2", "causal", "mean"), "average"].strip("[]").split(", "))
    assert lo < scores.loc[("tiny-qwen2", "causal", "mean"), "average"] < hi


def test_summary_text_reports_sizes_significance_and_disagreement(planted):
    rows = load.per_query(planted)
    by_length = stats.paired_differences(rows, ["backbone", "pooling", "task", "length"], n_resamples=300)
    primary = stats.paired_differences(rows, ["backbone", "pooling"], n_resamples=300)
    out = text.summary_text(rows, primary, by_length)
    assert "3 training seeds (1, 2, 3)" in out and "40 queries per task and length" in out
    assert "significant, bidirectional is better" in out and "Agrees with the paper" in out
    assert "4 of 8 cells differ significantly" in out
    null = load.per_query(load.normalise(make_results(effect=0.0, shared_draws=False, rng_seed=3)))
    head0 = stats.paired_differences(null, ["backbone", "pooling"], n_resamples=300)
    by0 = stats.paired_differences(null, ["backbone", "pooling", "task", "length"], n_resamples=300)
    out0 = text.summary_text(null, head0, by0)
    assert "not significant: the interval, which includes seed-to-seed variation, covers zero" in out0 and "Does not reproduce the paper" in out0
    assert "No comparison possible" in text.verdict(head0.iloc[0:0])
    one = null[null.seed == 1]
    out1 = text.summary_text(one, stats.paired_differences(one, ["backbone", "pooling"], n_resamples=100), by0)
    assert "1 training seed (1)" in out1 and "query sampling only" in out1


def test_answer_paragraph_states_the_primary_contrast_with_its_interval_and_where_it_arises(planted):
    rows = load.per_query(planted)
    primary = stats.paired_differences(rows, ["backbone", "pooling"], n_resamples=500)
    by_length = stats.paired_differences(rows, ["backbone", "pooling", "task", "length"], n_resamples=300)
    r = primary.iloc[0]
    out = text.answer_paragraph(primary, by_length, None, {("tiny-qwen2", "mean"): 0.061}, "ndcg_at_1",
                                [256, 2048])
    assert out.startswith("**Answer (tiny scale).**")
    assert f"{text.points(r['diff'])} points [95% CI {text.points(r.ci_low)}, {text.points(r.ci_high)}]" in out
    assert "bidirectional is better" in out and "3 seeds" in out and "smallest detectable difference 6.1" in out
    assert "needle 1024" in out and "needle 256" not in out  # the planted effect starts at 1024 tokens
    assert "256-2048 tokens" in out and "+20 points" in out
    null = load.per_query(load.normalise(make_results(effect=0.0, shared_draws=False, rng_seed=3)))
    p0 = stats.paired_differences(null, ["backbone", "pooling"], n_resamples=300)
    b0 = stats.paired_differences(null, ["backbone", "pooling", "task", "length"], n_resamples=300)
    assert "does not measurably help at this scale" in text.answer_paragraph(p0, b0, None, {}, "m", [256])


# ----------------------------------------------------------------- loading


def test_local_study_folder_round_trip_with_probes_and_pretraining(tmp_path, monkeypatch):
    folder = write_study(tmp_path, make_results(n_queries=5, lengths=[256, 512], backbones=("tiny-ar",)))
    (folder / "probe-run").mkdir()
    probe_rows().to_parquet(folder / "probe-run" / "probes.parquet")
    build = tmp_path / "cache" / "tiny-ar-abc"
    build.mkdir(parents=True)
    curves = pretrain_rows(backbone="tiny-ar").assign(backbone="tiny-ar")
    curves.to_parquet(build / "results.parquet")
    monkeypatch.setattr(load, "pretrained_folder", lambda name: build if name == "tiny-ar" else None)
    df = load.load_local(folder / "results.parquet")
    assert set(df.task) == {"passkey", "needle", "pretrain", "probe/attention_distance", "probe/context_sensitivity"}
    assert (df.task == "pretrain").sum() == len(curves) and df.step.notna().sum() == len(curves)
    assert len(load.load_local(folder, companions=False)) == len(load.load_local(folder)) - len(curves) - len(probe_rows())
    assert list(df.columns[:len(COLUMNS)]) == COLUMNS and "optim.lr" in df
    assert str(df.value.dtype) == "float64" and str(df.length.dtype) == "Int64"
    assert load.parameter_columns(df) == ["backbone", "encoding", "attention", "pooling", "seed", "optim.lr"]
    swept = df.assign(**{"model.attention": df.attention, "model.pooling": df.pooling})  # what a sweep writes
    assert load.parameter_columns(swept) == ["backbone", "encoding", "attention", "pooling", "seed", "optim.lr"]
    table, storage = load.study_paths("fixture", tmp_path)
    assert table == folder / "results.parquet" and storage is None


class FakeFile:
    """A run file (wandb.apis.public.File): download() writes it under root/<its path>."""

    def __init__(self, name: str, payload: dict):
        self.name, self.payload = name, payload

    def download(self, root: str, replace: bool = False):
        path = Path(root) / self.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.payload))


class FakeArtifact:
    def __init__(self, table: pd.DataFrame):
        self.type, self.table = "results", table

    def download(self, root: str) -> str:
        self.table.to_parquet(Path(root) / "results.parquet")
        return root


class FakeRun:
    """The surface of wandb.apis.public.Run that load.run_to_frame uses."""

    def __init__(self, run_id, config, summary, files=None, artifacts=(), group="fixture", job_type="train"):
        self.id, self.name, self.group, self.job_type = run_id, f"run-{run_id}", group, job_type
        self.config, self.summary, self.created_at = config, summary, "2026-01-01T00:00:00"
        self._files, self._artifacts = files or {}, list(artifacts)

    def file(self, path):
        return self._files[path]

    def logged_artifacts(self):
        return self._artifacts


class FakeApi:
    def __init__(self, runs):
        self._runs = runs
        self.calls = []

    def runs(self, path, filters=None, per_page=100):
        self.calls.append((path, filters))
        return [r for r in self._runs if not filters or r.group == filters.get("group")]


def logged_table(table: pd.DataFrame) -> dict:
    """What study.train logs as `eval/results`: aggregate rows, as strings, in W&B's table-file JSON."""
    agg = table[table.query_id.isna()].drop(columns=["query_id", "depth"]).astype(str)
    return {"columns": list(agg.columns), "data": agg.to_numpy().tolist()}


def test_wandb_runs_convert_to_the_local_schema():
    local = make_results(n_queries=5, lengths=[256, 512], seeds=(1,))
    runs = []
    for run_id, t in local.groupby("run_id"):
        path = f"media/table/eval/results_9_{run_id}.table.json"
        config = {"model": {"backbone": t.backbone.iloc[0], "attention": t.attention.iloc[0], "pooling": "mean"},
                  "seed": 1}
        runs.append(FakeRun(run_id, config, {"eval/results": {"_type": "table-file", "path": path}},
                            files={path: FakeFile(path, logged_table(t))}))
    runs.append(FakeRun("other", {}, {}, group="another-study"))
    runs.append(FakeRun("rep", {}, {}, job_type="analysis"))
    api = FakeApi(runs)
    got = load.load_wandb("me/proj", "fixture", api=api)
    assert api.calls == [("me/proj", {"group": "fixture"})]
    want = load.aggregates(load.normalise(local))
    assert list(got.columns) == list(load.normalise(local).columns)
    assert dict(got.dtypes) == dict(load.normalise(local).dtypes)
    mine = load.aggregates(got)
    key = ["run_id", "task", "length"]
    merged = mine.merge(want, on=key, suffixes=("", "_want"))
    assert len(merged) == len(want) == 2 * 2 * 2
    np.testing.assert_allclose(merged.value, merged.value_want)
    assert (merged.attention == merged.attention_want).all() and (merged.seed == 1).all()
    assert got["optim.lr"].dtype.kind == "f"  # numbers logged as text come back as numbers


def test_wandb_prefers_a_results_artifact_and_falls_back_to_the_summary():
    local = make_results(n_queries=4, lengths=[256], seeds=(2,))
    bidi = local[local.attention == "bidirectional"]
    with_artifact = FakeRun("a1", {}, {}, artifacts=[FakeArtifact(bidi)])
    got = load.run_to_frame(with_artifact)
    assert load.has_per_query(got) and len(got) == len(bidi)
    summary = {"eval/passkey/256/ndcg_at_1": 0.75, "eval/passkey/ndcg_at_1": 0.75, "eval/average/ndcg_at_1": 0.75,
               "time/train_seconds": 3.0, "eval/passkey/256/label": "x"}
    config = {"model": {"value": {"backbone": "tiny-llama", "attention": "causal", "pooling": "last_token"}},
              "seed": {"value": 4}}
    got = load.run_to_frame(FakeRun("s1", config, summary))
    assert set(zip(got.task, got.length.astype(object).where(got.length.notna(), None))) == {("passkey", 256),
                                                                                          ("passkey", None)}
    assert (got.attention == "causal").all() and (got.seed == 4).all() and (got.backbone == "tiny-llama").all()
    assert (got.run_id == "s1").all() and (got.study == "fixture").all()
    units = load.evaluation_units(got)
    assert list(units.query_id.unique()) == ["all"] and len(units) == 1


# ----------------------------------------------------------------- sweep overview


@pytest.mark.slow
def test_trial_table_effects_and_importances(tmp_path):
    df = load.normalise(make_results(effect=0.5, long_from=0, n_queries=20, lengths=[512, 2048], seeds=(1, 2),
                                     poolings=("mean", "last_token")))
    trials = sweep.trials_from_results(df)
    assert len(trials) == 8 and trials.objective.between(0, 1).all()
    one = df[(df.run_id == trials.run_id.iloc[0]) & df.query_id.notna() & (df.metric == "ndcg_at_1")]
    assert trials.objective.iloc[0] == pytest.approx(one.groupby(["task", "length"]).value.mean().mean())
    params = [p for p in load.parameter_columns(df) if p in trials]
    effects = sweep.parameter_effects(trials, params)
    att = effects[effects.parameter == "attention"].set_index("value")["mean"]
    assert att["bidirectional"] > att["causal"]
    assert set(effects.parameter) == {"attention", "pooling", "seed", "optim.lr"}
    imp, reason = sweep.importances(sweep.study_from_trials(trials, params))
    assert imp is not None and set(imp) == {"attention", "pooling", "seed", "optim.lr"}, reason
    assert max(imp, key=imp.get) == "attention"
    import matplotlib.pyplot as plt

    face = plt.rcParams["axes.facecolor"]
    assert sweep.plot_importances(sweep.study_from_trials(trials, params)) is not None
    assert plt.rcParams["axes.facecolor"] == face  # Optuna's ggplot style does not leak into later figures
    none, why = sweep.importances(sweep.study_from_trials(trials.iloc[:1], params))
    assert none is None and "at least 2" in why
    # The Optuna storage path gives the same trials.
    write_study(tmp_path, df, optuna_db=True)
    loaded = sweep.load_optuna_study(str(tmp_path / "fixture" / "optuna.db"))
    from_db = sweep.trials_from_optuna(loaded)
    assert len(from_db) == 8 and set(sweep.trial_parameters(from_db)) == {"model.attention", "model.pooling", "seed"}
    np.testing.assert_allclose(sorted(from_db.objective), sorted(trials.objective))
    assert sweep.importance_study(loaded, from_db, sweep.trial_parameters(from_db)) is loaded


# ----------------------------------------------------------------- plots


@pytest.mark.slow
def test_plots_build_figures(tmp_path, planted):
    full = load.normalise(make_results(n_queries=10, lengths=[512, 2048], extras=True, poolings=("mean", "last_token")))
    rows = load.per_query(full)
    cells = stats.cell_means(rows, ["backbone", "attention", "pooling", "task", "length"], n_resamples=100)
    fig = plots.plot_score_vs_length(cells)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 4
    keys = ["backbone", "pooling", "task", "length", "depth_bucket"]
    dc = stats.cell_means(rows, ["attention"] + keys, n_resamples=100)
    dd = stats.paired_differences(rows, keys, n_resamples=100, n_permutations=200)
    fig = plots.plot_depth_heatmaps(dc, dd, "needle")
    assert len([a for a in fig.axes if a.images]) == 2 * 3
    diffs = stats.paired_differences(rows, keys[:4], n_resamples=100, n_permutations=200)
    fig = plots.plot_forest(diffs, keys[:4])
    assert len(fig.axes[0].get_yticklabels()) == len(diffs) == 8
    path = plots.save_figure(fig, tmp_path / "figs", "forest")
    assert path.stat().st_size > 1000
    probes = plots.plot_probes(full)
    assert list(probes) == ["probe/attention_distance", "probe/context_sensitivity"]
    distance = probes["probe/attention_distance"].axes
    assert [a.get_xlabel() for a in distance[:2]] == ["length", "length"] and len(distance[0].lines) == 2
    sensitivity = probes["probe/context_sensitivity"].axes[0]
    assert sensitivity.get_xlabel() == "depth" and len(sensitivity.lines) == 2 * 2  # attention x length
    causal = [ln for ln in sensitivity.lines if "causal" in ln.get_label()]
    assert all(np.allclose(ln.get_ydata(), 0) for ln in causal)
    layers = plots.plot_attention_layers(full)  # per-layer attention rows: x layer, line per attention x length
    panels = {a.get_title(): a for a in layers.axes if a.lines}
    assert set(panels) == {"entropy_norm", "far_mass_D64", "forward_mass_50"}
    forward = panels["forward_mass_50"]
    assert forward.get_xlabel() == "layer" and len(forward.lines) == 2 * 2
    for line in forward.lines:
        assert list(line.get_xdata()) == [0, 1]
        assert np.allclose(line.get_ydata(), 0) == ("causal" in line.get_label())
    assert plots.plot_pretraining(full) is not None
    assert plots.plot_pretraining(planted) is None and plots.plot_probes(planted) == {}
    assert plots.plot_attention_layers(planted) is None


def test_normalise_reads_text_tables():
    df = pd.DataFrame({"task": ["needle"], "length": ["512"], "value": ["0.5"], "query_id": ["None"],
                       "depth_bucket": ["<NA>"], "seed": ["3"], "trial": ["nan"], "optim.lr": ["0.001"]})
    out = load.normalise(df)
    assert out.length.iloc[0] == 512 and out.value.iloc[0] == 0.5 and out.seed.iloc[0] == 3
    assert out.query_id.isna().all() and out.depth_bucket.isna().all() and out.trial.isna().all()
    assert out["optim.lr"].iloc[0] == pytest.approx(0.001)
    assert set(COLUMNS) <= set(out.columns) and set(DTYPES) <= set(out.columns)
