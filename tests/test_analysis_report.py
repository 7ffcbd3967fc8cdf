"""`study report`: both notebooks execute end to end on a fixture study; HTML, PNGs, W&B run; bad input."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from analysis_fixtures import make_results, pretrain_rows, probe_rows, write_study

from analysis import load
from analysis.report import NOTEBOOK_DIR, NOTEBOOKS
from study.cli import main


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One `study report` on a fixture study (both notebooks executed) for every test that reads its outputs."""
    tmp = tmp_path_factory.mktemp("report")
    df = make_results(effect=0.3, long_from=1024, n_queries=12, lengths=[256, 1024], seeds=(1, 2),
                      backbones=("tiny-ar",))
    folder = write_study(tmp / "runs", df, optuna_db=True)
    (folder / "trials" / "0").mkdir(parents=True)  # study probe writes next to a run's results
    probe_rows().assign(backbone="tiny-ar").to_parquet(folder / "trials" / "0" / "probes.parquet")
    build = tmp / "cache" / "tiny-ar-abc"  # a pretrained backbone's build folder (study/pretrain)
    build.mkdir(parents=True)
    pretrain_rows(backbone="tiny-ar").to_parquet(build / "results.parquet")
    out = tmp / "reports"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setattr(load, "pretrained_folder", lambda name: build if name == "tiny-ar" else None)
        mp.chdir(tmp)
        rc = main(["report", "--results", str(folder / "results.parquet"), "--optuna", str(folder / "optuna.db"),
                   "--out", str(out), "--resamples", "300"])
    return SimpleNamespace(rc=rc, out=out, printed=printed.getvalue())


@pytest.mark.slow
def test_report_succeeds_and_prints_the_report_and_upload_command(report):
    assert report.rc == 0
    assert str(report.out / "bidirectionality_long_context.html") in report.printed and "wandb sync" in report.printed


@pytest.mark.slow
def test_report_writes_one_png_per_figure_of_both_notebooks(report):
    figures = {p.stem for p in (report.out / "figures").glob("*.png")}
    assert figures == {"score_vs_length", "score_vs_length_ndcg_at_1", "depth_heatmap_needle", "depth_heatmap_passkey", "paired_differences",
                       "probe_attention_distance", "probe_attention_layers",
                       "probe_context_sensitivity", "parameter_effects", "parameter_importances", "pretraining_loss"}


@pytest.mark.slow
def test_report_main_notebook_has_every_section_and_hides_code(report):
    main_html = (report.out / "bidirectionality_long_context.html").read_text()
    for heading in ("How does bidirectional attention affect long-context embeddings?", "Score vs document length",
                    "Document length x needle depth", "Paired differences: bidirectional - causal",
                    "Summary table (the paper", "Bidirectionality probes"):
        assert heading in main_html, heading
    assert main_html.count("data:image/png;base64") >= 5
    assert "def " not in main_html and "import " not in main_html  # code hidden, results shown
    assert "PosixPath" not in main_html and "Warning" not in main_html


@pytest.mark.slow
def test_report_main_notebook_states_the_design_and_the_tested_conclusion(report):
    main_html = (report.out / "bidirectionality_long_context.html").read_text()
    assert "2 training seeds (1, 2)" in main_html and "12 queries per task and length" in main_html
    # the fixture's effect (+0.3 from 1024 tokens) is found, corrected for multiple comparisons
    assert "significant, bidirectional is better" in main_html and "Agrees with the paper" in main_html
    assert "p_adjusted" in main_html


@pytest.mark.slow
def test_report_summary_answers_first_with_an_interval(report):
    answer = (report.out / "summary.md").read_text().split("\n\n")[1]  # the first paragraph answers the question
    assert answer.startswith("**Answer (tiny scale).**") and "tiny-ar / mean: +" in answer and "95% CI" in answer


@pytest.mark.slow
def test_report_sweep_overview_reads_the_optuna_storage_and_pretraining_curves(report):
    sweep_html = (report.out / "sweep_overview.html").read_text()
    for heading in ("Sweep overview", "4 trials from Optuna storage", "Parameter effects",
                    "Parameter importances", "fANOVA over 4 completed trials", "Pretraining loss curves"):
        assert heading in sweep_html, heading
    assert "Warning" not in sweep_html


@pytest.mark.slow
def test_report_logs_an_offline_wandb_run_and_keeps_its_data(report):
    pointer = json.loads((report.out / "wandb.json").read_text())
    assert pointer["mode"] == "offline" and pointer["group"]
    assert len(list((report.out / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
    assert (report.out / "data" / "results.parquet").is_file()


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


def test_report_runs_every_notebook_in_the_folder():
    """A notebook added to notebooks/ but not to analysis.report.NOTEBOOKS would never run (nor be tested by
    the execution test above); one listed but missing would fail only at report time."""
    assert {p.stem for p in Path(NOTEBOOK_DIR).glob("*.py")} == set(NOTEBOOKS)
    assert {p.stem for p in Path(NOTEBOOK_DIR).glob("*.ipynb")} == set(NOTEBOOKS)
