"""`study demo --smoke`: the default study's whole code path (set-up -> sweep -> BM25 reference -> report)."""

import json

import pandas as pd
import pytest

from study.cli import main


@pytest.mark.slow
def test_smoke_demo_produces_a_report_from_a_real_sweep_and_resumes(tmp_path, monkeypatch, capsys):
    from study.tasks.pydocs import find_deb

    if find_deb() is None:
        pytest.skip("python3.11-doc .deb not found (the demo's pydocs-deep task): run `make setup`")
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--smoke"]) == 0
    out = capsys.readouterr().out
    assert "reports/bidirectionality_long_context.html" in out and "wandb sync" in out

    study = tmp_path / "runs" / "demo_smoke"
    table = pd.read_parquet(study / "results.parquet")
    # 2 poolings x 2 attentions, one seed: four finished trials, each with its own per-query rows.
    assert sorted(table.trial.unique()) == [0, 1, 2, 3]
    cells = table[["pooling", "attention"]].drop_duplicates()
    assert len(cells) == 4 and set(cells.pooling) == {"mean", "last_token"} and set(table.backbone) == {"mini-qwen2"}
    queries = table[table.query_id.notna()]
    assert queries.value.between(0, 1).all()
    assert set(queries.task) == {"passkey", "needle", "pydocs-deep"}
    # Grid order: seed-major with the attention pair adjacent, so trials 0 and 1 are one paired comparison.
    first = table[table.trial.isin([0, 1])][["pooling", "attention"]].drop_duplicates()
    assert len(first) == 2 and first.pooling.nunique() == 1

    # BM25 on the same documents: the report's reference line.
    bm25 = pd.read_parquet(study / "reference" / "bm25" / "results.parquet")
    bm25 = bm25[bm25.query_id.notna()]
    assert set(bm25.task) == set(queries.task) and set(bm25.length) == set(queries.length)

    summary = (tmp_path / "reports" / "summary.md").read_text()
    answer = summary.split("\n\n")[1]
    assert answer.startswith("**Answer (tiny scale).**") and "95% CI" in answer and "1 seeds" not in answer
    assert list((tmp_path / "reports" / "figures").glob("score_vs_length*.png"))
    timing = json.loads((study / "demo_timing.json").read_text())
    assert set(timing) >= {"setup", "pretrain", "sweep", "reference", "report", "total"}
    assert timing["total"] >= timing["sweep"] > 0 and timing["pretrain"] == 0  # random-init default: nothing to pretrain

    # A second run reuses the finished trials: nothing is trained again.
    before = {p: p.stat().st_mtime_ns for p in study.glob("trials/*/results.parquet")}
    assert main(["demo", "--smoke"]) == 0
    again = json.loads((study / "demo_timing.json").read_text())
    assert {p: p.stat().st_mtime_ns for p in study.glob("trials/*/results.parquet")} == before
    assert again["sweep"] < timing["sweep"]
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
