"""`study train` end to end on a tiny backbone: run folder, results table, offline W&B run, determinism."""

import contextlib
import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from study.cli import main

TINY = [
    "trainer.max_steps=6", "trainer.batch_size=4", "trainer.val_check_interval=3", "trainer.log_every_n_steps=1",
    "data.num_pairs=48", "data.num_val_pairs=8", "data.doc_max_words=120",
    "eval.lengths=[128,256]", "eval.num_queries=6", "eval.num_docs=12", "model.max_length=256",
]


def run(tmp_path: Path, name: str, *extra: str) -> Path:
    code = main(["train", f"output_dir={tmp_path}", f"run_name={name}", *TINY, *extra])
    assert code == 0
    return tmp_path / name


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """One `study train` for every test that reads its run folder; the in-memory embedder is kept (a spy on
    save_model) so that the saved model can be compared with the trained one."""
    import study.train

    trained = {}
    save = study.train.save_model

    def spy(cfg, embedder, backbone, out):
        trained.update(embedder=embedder, backbone=backbone)
        return save(cfg, embedder, backbone, out)

    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setattr(study.train, "save_model", spy)
        run_dir = run(tmp_path_factory.mktemp("e2e"), "e2e", "model.attention=causal", "model.pooling=last_token",
                      "seed=1")
    table = pd.read_parquet(run_dir / "results.parquet")
    return SimpleNamespace(run_dir=run_dir, out=printed.getvalue(), trained=trained, table=table,
                           per_query=table[table.query_id.notna()])


@pytest.mark.slow
def test_train_prints_the_score_table_and_the_run_folder(e2e):
    assert "ndcg_at_1 by task and document length" in e2e.out and str(e2e.run_dir) in e2e.out


@pytest.mark.slow
def test_train_saves_the_resolved_config(e2e):
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(e2e.run_dir / "config.yaml")
    assert (cfg.model.attention, cfg.model.pooling, cfg.seed) == ("causal", "last_token", 1)


@pytest.mark.slow
def test_train_results_have_one_row_per_task_length_query_and_metric(e2e):
    assert set(e2e.table.attention) == {"causal"} and set(e2e.table.pooling) == {"last_token"}
    assert set(e2e.table.task) == {"passkey", "needle"}
    per_query = e2e.per_query
    # 2 tasks x 2 lengths x 6 queries x 5 metrics, each with a depth in [0, 1]
    assert len(per_query) == 2 * 2 * 6 * 5
    assert per_query.depth.between(0, 1).all() and per_query.depth_bucket.notna().all()
    assert per_query.value.between(0, 1).all()


@pytest.mark.slow
def test_train_aggregate_rows_are_the_means_of_their_query_rows(e2e):
    table, per_query = e2e.table, e2e.per_query
    agg = table[table.query_id.isna() & table.depth_bucket.isna() & table.length.notna()]
    for (task, length, metric), g in per_query.groupby(["task", "length", "metric"]):
        row = agg[(agg.task == task) & (agg.length == length) & (agg.metric == metric)]
        assert row.value.item() == pytest.approx(g.value.mean())
    # nDCG@1 of a single relevant document is exactly the hit rate at rank 1.
    assert set(per_query[per_query.metric == "ndcg_at_1"].value.unique()) <= {0.0, 1.0}


@pytest.mark.slow
def test_train_writes_one_offline_wandb_run_and_logs_the_finish_once(e2e):
    wandb_files = list(e2e.run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(wandb_files) == 1 and wandb_files[0].stat().st_size > 0  # the protobuf record file
    assert (e2e.run_dir / "train.log").read_text().count("finished e2e") == 1


@pytest.mark.slow
def test_train_log_names_the_precision_that_ran_not_auto(e2e):
    from omegaconf import OmegaConf

    from study.precision import resolve_precision

    cfg = OmegaConf.load(e2e.run_dir / "config.yaml")
    ran = resolve_precision(cfg.trainer.precision, "cpu")
    assert ran != "auto" and f"precision={ran}" in (e2e.run_dir / "train.log").read_text()


@pytest.mark.slow
def test_train_saved_model_reloads_to_the_trained_embeddings(e2e):
    from study.encode import encode
    from study.inference import eval_builder, load_trained

    assert (e2e.run_dir / "model" / "embedder.json").exists()
    embedder, backbone, cfg = load_trained(e2e.run_dir)
    texts = ["The grass is green. Ada's passkey is 12345.", "What is the pass key for Ada?"]
    reloaded = encode(embedder, eval_builder(cfg, backbone), texts, precision="32-true")
    trained = encode(e2e.trained["embedder"], eval_builder(cfg, e2e.trained["backbone"]), texts, precision="32-true")
    np.testing.assert_allclose(reloaded, trained, atol=1e-5)


@pytest.mark.slow
def test_same_seed_same_scores_and_finished_runs_are_never_overwritten(tmp_path, capsys):
    a = pd.read_parquet(run(tmp_path, "a", "seed=3") / "results.parquet")
    b = pd.read_parquet(run(tmp_path, "b", "seed=3") / "results.parquet")
    cols = ["task", "length", "query_id", "metric", "value"]
    key = ["task", "length", "query_id", "metric"]
    pd.testing.assert_frame_equal(a[cols].sort_values(key).reset_index(drop=True),
                                  b[cols].sort_values(key).reset_index(drop=True))
    before = (tmp_path / "a" / "results.parquet").read_bytes()
    code = main(["train", f"output_dir={tmp_path}", "run_name=a", *TINY])
    assert code == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert (tmp_path / "a" / "results.parquet").read_bytes() == before
