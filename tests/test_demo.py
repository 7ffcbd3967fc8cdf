"""`study demo --smoke`: the default study's whole code path (set-up -> sweep -> BM25 reference -> report)."""

import contextlib
import io
import json
from types import SimpleNamespace

import pandas as pd
import pytest

from study.cli import main


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One `study demo --smoke` for every test here: what each test reads is kept in memory, so the resume
    test (which runs the demo again) cannot change what the others see."""
    from study.tasks.pydocs import find_deb

    if find_deb() is None:
        pytest.skip("python3.11-doc .deb not found (the demo's pydocs-deep task): run `make setup`")
    root = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.chdir(root)
        rc = main(["demo", "--smoke"])
    study = root / "runs" / "demo_smoke"
    return SimpleNamespace(
        root=root, rc=rc, out=printed.getvalue(), study=study,
        table=pd.read_parquet(study / "results.parquet"),
        timing=json.loads((study / "demo_timing.json").read_text()),
        trial_mtimes={p: p.stat().st_mtime_ns for p in study.glob("trials/*/results.parquet")},
    )


@pytest.mark.slow
def test_smoke_demo_succeeds_and_prints_the_report_and_upload_command(demo_run):
    assert demo_run.rc == 0
    assert "reports/bidirectionality_long_context.html" in demo_run.out and "wandb sync" in demo_run.out


@pytest.mark.slow
def test_smoke_demo_runs_the_whole_grid_with_per_query_rows(demo_run):
    table = demo_run.table
    # 2 poolings x 2 attentions, one seed: four finished trials, each with its own per-query rows.
    assert sorted(table.trial.unique()) == [0, 1, 2, 3]
    cells = table[["pooling", "attention"]].drop_duplicates()
    assert len(cells) == 4 and set(cells.pooling) == {"mean", "last_token"} and set(table.backbone) == {"mini-qwen2"}
    queries = table[table.query_id.notna()]
    assert queries.value.between(0, 1).all()
    assert set(queries.task) == {"passkey", "needle", "pydocs-deep"}


@pytest.mark.slow
def test_smoke_demo_grid_pairs_the_attentions_in_adjacent_trials(demo_run):
    # Grid order: seed-major with the attention pair adjacent, so trials 0 and 1 are one paired comparison.
    first = demo_run.table[demo_run.table.trial.isin([0, 1])][["pooling", "attention"]].drop_duplicates()
    assert len(first) == 2 and first.pooling.nunique() == 1


@pytest.mark.slow
def test_smoke_demo_scores_bm25_on_the_same_tasks_and_lengths(demo_run):
    queries = demo_run.table[demo_run.table.query_id.notna()]
    bm25 = pd.read_parquet(demo_run.study / "reference" / "bm25" / "results.parquet")
    bm25 = bm25[bm25.query_id.notna()]
    assert set(bm25.task) == set(queries.task) and set(bm25.length) == set(queries.length)


@pytest.mark.slow
def test_smoke_demo_summary_answers_first_with_an_interval(demo_run):
    summary = (demo_run.root / "reports" / "summary.md").read_text()
    answer = summary.split("\n\n")[1]
    assert answer.startswith("**Answer (tiny scale).**") and "95% CI" in answer and "1 seeds" not in answer


@pytest.mark.slow
def test_smoke_demo_writes_the_score_vs_length_figures_as_pngs(demo_run):
    figures = sorted((demo_run.root / "reports" / "figures").glob("score_vs_length*.png"))
    # the primary metric's figure and nDCG@1's (notebooks/bidirectionality_long_context.py)
    assert [p.stem for p in figures] == ["score_vs_length", "score_vs_length_ndcg_at_1"]
    for path in figures:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, path  # a drawn plot, not an empty canvas


@pytest.mark.slow
def test_smoke_demo_times_each_stage(demo_run):
    timing = demo_run.timing
    assert set(timing) >= {"setup", "pretrain", "sweep", "reference", "report", "total"}
    assert timing["total"] >= timing["sweep"] > 0 and timing["pretrain"] == 0  # random-init default: nothing to pretrain


@pytest.mark.slow
def test_smoke_demo_rerun_reuses_the_finished_trials(demo_run, monkeypatch):
    monkeypatch.chdir(demo_run.root)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["demo", "--smoke"]) == 0
    study = demo_run.study
    again = json.loads((study / "demo_timing.json").read_text())
    assert {p: p.stat().st_mtime_ns for p in study.glob("trials/*/results.parquet")} == demo_run.trial_mtimes
    assert again["sweep"] < demo_run.timing["sweep"]
    assert len(pd.read_parquet(study / "results.parquet").trial.unique()) == 4


def test_bm25_reference_is_reused_only_for_the_same_evaluation_settings(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import study.demo
    from study import demo

    calls = []

    def fake_run_eval(target, overrides):
        calls.append(overrides)
        out = tmp_path / "study" / "reference" / "bm25"
        out.mkdir(parents=True)
        pd.DataFrame({"value": [len(calls)]}).to_parquet(out / "results.parquet")
        return SimpleNamespace(eval_dir=out)

    monkeypatch.setattr(study.demo, "run_eval", fake_run_eval)
    spec = SimpleNamespace(base={"eval.lengths": [128], "eval.num_docs": 60, "trainer.max_steps": 3})
    first = demo.bm25_reference(spec, tmp_path / "study")
    assert demo.bm25_reference(spec, tmp_path / "study") == first and len(calls) == 1
    assert "eval.num_docs=60" in calls[0] and not any(c.startswith("trainer.") for c in calls[0])
    spec.base["trainer.max_steps"] = 9  # not an evaluation setting: still reused
    demo.bm25_reference(spec, tmp_path / "study")
    assert len(calls) == 1
    spec.base["eval.num_docs"] = 90  # another candidate pool: BM25 runs again, the old rows move aside
    again = demo.bm25_reference(spec, tmp_path / "study")
    assert len(calls) == 2 and pd.read_parquet(again).value.tolist() == [2]
    assert len(list((tmp_path / "study" / "reference-stale").glob("bm25-*/results.parquet"))) == 1
