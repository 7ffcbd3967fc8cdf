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
