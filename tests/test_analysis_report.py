"""`study report`: both notebooks execute end to end on a fixture study; HTML, PNGs, W&B run; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from analysis_fixtures import make_results, pretrain_rows, probe_rows, write_study

from analysis import load
from analysis.report import NOTEBOOK_DIR, NOTEBOOKS
from study.cli import main


@pytest.mark.slow
def test_report_executes_both_notebooks_on_a_fixture_study(tmp_path, monkeypatch, capsys):
    df = make_results(effect=0.3, long_from=1024, n_queries=12, lengths=[256, 1024], seeds=(1, 2),
                      backbones=("tiny-ar",))
    folder = write_study(tmp_path / "runs", df, optuna_db=True)
    (folder / "trials" / "0").mkdir(parents=True)  # study probe writes next to a run's results
    probe_rows().assign(backbone="tiny-ar").to_parquet(folder / "trials" / "0" / "probes.parquet")
    build = tmp_path / "cache" / "tiny-ar-abc"  # a pretrained backbone's build folder (study/pretrain)
    build.mkdir(parents=True)
    pretrain_rows(backbone="tiny-ar").to_parquet(build / "results.parquet")
    monkeypatch.setattr(load, "pretrained_folder", lambda name: build if name == "tiny-ar" else None)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "reports"
    rc = main(["report", "--results", str(folder / "results.parquet"), "--optuna", str(folder / "optuna.db"), "--out", str(out),
               "--resamples", "300"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert str(out / "bidirectionality_long_context.html") in printed and "wandb sync" in printed

    figures = {p.stem for p in (out / "figures").glob("*.png")}
    assert figures == {"score_vs_length", "score_vs_length_ndcg_at_1", "depth_heatmap_needle", "depth_heatmap_passkey", "paired_differences",
                       "probe_attention_distance", "probe_attention_layers",
                       "probe_context_sensitivity", "parameter_effects", "parameter_importances", "pretraining_loss"}
    main_html = (out / "bidirectionality_long_context.html").read_text()
    for heading in ("How does bidirectional attention affect long-context embeddings?", "Score vs document length",
                    "Document length x needle depth", "Paired differences: bidirectional - causal",
                    "Summary table (the paper", "Bidirectionality probes"):
        assert heading in main_html, heading
    assert "2 training seeds (1, 2)" in main_html and "12 queries per task and length" in main_html
    assert "significant, bidirectional is better" in main_html and "Agrees with the paper" in main_html
    assert "p_adjusted" in main_html and main_html.count("data:image/png;base64") >= 5
    assert "def " not in main_html and "import " not in main_html  # code hidden, results shown
    assert "PosixPath" not in main_html and "Warning" not in main_html

    summary = (out / "summary.md").read_text()
    answer = summary.split("\n\n")[1]  # the first paragraph under the heading answers the question
    assert answer.startswith("**Answer (tiny scale).**") and "tiny-ar / mean: +" in answer and "95% CI" in answer

    sweep_html = (out / "sweep_overview.html").read_text()
    for heading in ("Sweep overview", "4 trials from Optuna storage", "Parameter effects",
                    "Parameter importances", "fANOVA over 4 completed trials", "Pretraining loss curves"):
        assert heading in sweep_html, heading

    assert "Warning" not in sweep_html
    pointer = json.loads((out / "wandb.json").read_text())
    assert pointer["mode"] == "offline" and pointer["group"]
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert (out / "data" / "results.parquet").is_file()


@pytest.mark.parametrize("args, message", [
    (["--study", "nope"], "does not exist"),
    (["--results", "missing.parquet"], "does not exist"),
    ([], "give --study NAME"),
    (["--wandb", "projectonly"], "ENTITY/PROJECT"),
])
def test_report_refuses_bad_input_before_any_work(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["report", *args, "--out", str(tmp_path / "reports")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()


def test_report_refuses_an_unknown_metric(tmp_path, monkeypatch, capsys):
    folder = write_study(tmp_path / "runs", make_results(n_queries=2, lengths=[256], seeds=(1,)))
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--results", str(folder), "--metric", "accuracy"]) == 2
    assert "ndcg_at_10" in capsys.readouterr().err


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebooks_match_their_jupytext_scripts(name):
    import jupytext

    script = jupytext.read(NOTEBOOK_DIR / f"{name}.py")
    committed = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    assert [(c.cell_type, c.source) for c in committed.cells] == [(c.cell_type, c.source) for c in script.cells], \
        f"regenerate with: jupytext --to ipynb notebooks/{name}.py"
    params = [c for c in script.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "results = []" in params[0].source
    assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code")


def test_notebook_paths_exist():
    for name in NOTEBOOKS:
        assert (Path(NOTEBOOK_DIR) / f"{name}.py").is_file()
