"""`study train` end to end on a tiny backbone: run folder, results table, offline W&B run, determinism."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from study.cli import main

TINY = [
    "trainer.max_steps=6", "trainer.batch_size=4", "trainer.val_check_interval=3", "trainer.log_every_n_steps=1",
    "data.num_pairs=48", "data.num_val_pairs=8", "data.doc_max_words=120",
    "eval.lengths=[128,256]", "eval.num_queries=6", "eval.num_docs=12", "model.max_length=256",
]


TRAINED: dict = {}


@pytest.fixture
def capture_trained(monkeypatch):
    """Keep the in-memory embedder of the run that saves a model."""
    import study.train

    save = study.train.save_model

    def spy(cfg, embedder, backbone, out):
        TRAINED.update(embedder=embedder, backbone=backbone)
        return save(cfg, embedder, backbone, out)

    monkeypatch.setattr(study.train, "save_model", spy)


def run(tmp_path: Path, name: str, *extra: str) -> Path:
    code = main(["train", f"output_dir={tmp_path}", f"run_name={name}", *TINY, *extra])
    assert code == 0
    return tmp_path / name


@pytest.mark.slow
def test_train_writes_run_folder_results_and_wandb(tmp_path, capsys, capture_trained):
    run_dir = run(tmp_path, "e2e", "model.attention=causal", "model.pooling=last_token", "seed=1")
    out = capsys.readouterr().out
    assert "ndcg_at_1 by task and document length" in out and str(run_dir) in out

    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run_dir / "config.yaml")
    assert (cfg.model.attention, cfg.model.pooling, cfg.seed) == ("causal", "last_token", 1)

    table = pd.read_parquet(run_dir / "results.parquet")
    assert set(table.attention) == {"causal"} and set(table.pooling) == {"last_token"}
    assert set(table.task) == {"passkey", "needle"}
    per_query = table[table.query_id.notna()]
    # 2 tasks x 2 lengths x 6 queries x 5 metrics, each with a depth in [0, 1]
    assert len(per_query) == 2 * 2 * 6 * 5
    assert per_query.depth.between(0, 1).all() and per_query.depth_bucket.notna().all()
    assert per_query.value.between(0, 1).all()
    # Aggregates are the means of the per-query rows they summarise.
    agg = table[table.query_id.isna() & table.depth_bucket.isna() & table.length.notna()]
    for (task, length, metric), g in per_query.groupby(["task", "length", "metric"]):
        row = agg[(agg.task == task) & (agg.length == length) & (agg.metric == metric)]
        assert row.value.item() == pytest.approx(g.value.mean())
    # nDCG@1 of a single relevant document is exactly the hit rate at rank 1.
    ndcg1 = per_query[per_query.metric == "ndcg_at_1"].value
    assert set(ndcg1.unique()) <= {0.0, 1.0}

    # One offline W&B run with its protobuf record file.
    wandb_files = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(wandb_files) == 1 and wandb_files[0].stat().st_size > 0
    # The trained model is saved and reloads as a backbone with the same attention.
    assert (run_dir / "model" / "embedder.json").exists()
    assert (run_dir / "train.log").read_text().count("finished e2e") == 1

    # The saved model, reloaded, gives the trained model's embeddings.
    from study.encode import encode
    from study.inference import eval_builder, load_trained

    embedder, backbone, cfg = load_trained(run_dir)
    texts = ["The grass is green. Ada's passkey is 12345.", "What is the pass key for Ada?"]
    reloaded = encode(embedder, eval_builder(cfg, backbone), texts, precision="32-true")
    trained = encode(TRAINED["embedder"], eval_builder(cfg, TRAINED["backbone"]), texts, precision="32-true")
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
