"""`study demo --smoke`: the default study's whole code path (pretrain pair -> sweep -> report) on a tiny budget."""

import json

import pandas as pd
import pytest

from study.cli import main


@pytest.mark.slow
def test_smoke_demo_produces_a_report_from_a_real_sweep_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--smoke"]) == 0
    out = capsys.readouterr().out
    assert "reports/bidirectionality_long_context.html" in out and "wandb sync" in out

    study = tmp_path / "runs" / "demo_smoke"
    table = pd.read_parquet(study / "results.parquet")
    # 2 backbones x 2 attentions, one seed: four finished trials, each with its own per-query rows.
    assert sorted(table.trial.unique()) == [0, 1, 2, 3]
    cells = table[["backbone", "attention"]].drop_duplicates()
    assert len(cells) == 4 and set(cells.backbone) == {"smoke-ar", "smoke-diffusion"}
    assert table[table.query_id.notna()].value.between(0, 1).all()

    html = (tmp_path / "reports" / "bidirectionality_long_context.html").read_text()
    assert "bidirectional" in html and "causal" in html
    assert (tmp_path / "reports" / "figures").glob("*.png")
    assert "seed" in (tmp_path / "reports" / "summary.md").read_text()
    timing = json.loads((study / "demo_timing.json").read_text())
    assert timing["total"] > 0 and set(timing["pretrain"]) == {"autoregressive", "masked_diffusion"}

    # A second run reuses the pretrained pair and the finished trials: nothing is trained again.
    before = {p: p.stat().st_mtime_ns for p in study.glob("trials/*/results.parquet")}
    assert main(["demo", "--smoke"]) == 0
    again = json.loads((study / "demo_timing.json").read_text())
    assert {p: p.stat().st_mtime_ns for p in study.glob("trials/*/results.parquet")} == before
    assert again["sweep"] < timing["sweep"]
    assert len(pd.read_parquet(study / "results.parquet").trial.unique()) == 4
