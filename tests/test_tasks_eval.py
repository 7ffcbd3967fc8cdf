"""`study eval` end to end: a finished run, an off-the-shelf (untrained) model and BM25, on tiny tasks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from study.cli import main

BEIR = Path(__file__).parent / "fixtures" / "beir_tiny"
SMALL = ["eval.lengths=[128]", "eval.num_queries=3", "eval.num_docs=6", "eval.precision=32-true"]


@pytest.fixture
def finished_run(tmp_path) -> Path:
    """A run folder as `study train` leaves it (config, model/, results.parquet), without the training."""
    from study.backbones.loading import load_backbone
    from study.config import load_config, save_config
    from study.inference import save_model
    from study.model import build_embedder
    from study.results import make_table, write_table

    cfg = load_config(overrides=["model.attention=causal", "model.pooling=last_token", "run_name=tiny", "seed=2",
                                 f"output_dir={tmp_path}"])
    run_dir = tmp_path / "tiny"
    backbone = load_backbone(cfg.model, seed=cfg.seed)
    save_config(cfg, run_dir / "config.yaml")
    save_model(cfg, build_embedder(backbone, cfg.model), backbone, run_dir / "model")
    row = dict(task="passkey", length=128, depth=None, depth_bucket=None, query_id=None, metric="ndcg_at_1", value=0.5)
    write_table(make_table([row], {"run_id": "abc12345", "run_name": "tiny", "study": "", "trial": -1,
                                   "created_at": "", "backbone": "tiny-qwen2", "attention": "causal",
                                   "pooling": "last_token", "seed": 2}), run_dir / "results.parquet")
    return run_dir


@pytest.mark.slow
def test_eval_a_finished_run_writes_a_new_folder_and_leaves_the_run_alone(finished_run, capsys):
    before = (finished_run / "results.parquet").read_bytes()
    assert main(["eval", str(finished_run), f"tasks=[beir:{BEIR},passkey]", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "ndcg_at_1 by task and document length" in out and "beir:beir_tiny" in out
    (eval_dir,) = finished_run.glob("eval-*")
    table = pd.read_parquet(eval_dir / "results.parquet")
    assert set(table.task) == {"beir:beir_tiny", "passkey"}
    # Rows carry the trained run's identity and ablation, so analysis joins them with its training rows.
    assert set(table.run_id) == {"abc12345"} and set(table.run_name) == {"tiny"}
    assert set(table.attention) == {"causal"} and set(table.pooling) == {"last_token"} and set(table.seed) == {2}
    per_query = table[table.query_id.notna()]
    assert len(per_query[per_query.task == "passkey"]) == 3 * 5 and len(per_query[per_query.task != "passkey"]) == 3 * 5
    assert per_query.value.between(0, 1).all()
    assert set(per_query[per_query.task != "passkey"].length) == {256}
    cfg = OmegaConf.load(eval_dir / "config.yaml")
    assert cfg.wandb.job_type == "eval" and list(cfg.eval.tasks) == [f"beir:{BEIR}", "passkey"]
    assert len(list(eval_dir.glob("wandb/offline-run-*/run-*.wandb"))) == 1
    assert (finished_run / "results.parquet").read_bytes() == before
    assert list((finished_run / "embeddings").rglob("*.npy"))  # re-evaluating it re-encodes nothing

    # A trained run's model keys are fixed: refused before any compute, nothing written.
    assert main(["eval", str(finished_run), "model.pooling=mean", f"tasks=[beir:{BEIR}]"]) == 2
    assert "cannot be changed" in capsys.readouterr().err
    assert len(list(finished_run.glob("eval-*"))) == 1


@pytest.mark.slow
def test_eval_an_off_the_shelf_model_and_bm25(tmp_path, capsys):
    args = [f"output_dir={tmp_path}", f"tasks=[beir:{BEIR}]", *SMALL]
    assert main(["eval", "model.backbone=tiny-qwen2", "model.pooling=mean", "model.attention=bidirectional",
                 "run_name=base", *args]) == 0
    table = pd.read_parquet(tmp_path / "base" / "results.parquet")
    assert set(table.backbone) == {"tiny-qwen2"} and set(table.attention) == {"bidirectional"}
    assert set(table.pooling) == {"mean"} and set(table.run_name) == {"base"}
    assert table[table.query_id.notna()].query_id.nunique() == 3
    # The same run_name again is refused: existing results are never overwritten.
    before = (tmp_path / "base" / "results.parquet").read_bytes()
    assert main(["eval", "model.backbone=tiny-qwen2", "run_name=base", *args]) == 2
    assert "already holds results" in capsys.readouterr().err
    assert (tmp_path / "base" / "results.parquet").read_bytes() == before

    assert main(["eval", "bm25", *args]) == 0
    (bm25_dir,) = tmp_path.glob("eval-bm25-*")
    bm25 = pd.read_parquet(bm25_dir / "results.parquet")
    assert set(bm25.backbone) == {"bm25"} and bm25.attention.isna().all() and bm25.pooling.isna().all()
    task_score = bm25[bm25.query_id.isna() & bm25.length.isna() & (bm25.metric == "ndcg_at_1")].value.item()
    assert task_score == 1.0  # the fixture's queries share words only with their relevant documents


def test_eval_refuses_bad_targets_and_keys(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope"), "tasks=[passkey]"]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["eval", "tasks=[passkey,nope]", f"output_dir={tmp_path}"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_new_eval_folders_never_reuse_an_existing_one(tmp_path):
    from study.run_eval import _new_dir, normalize_overrides

    assert _new_dir(tmp_path, "eval-x") == tmp_path / "eval-x"
    assert _new_dir(tmp_path, "eval-x") == tmp_path / "eval-x-2"
    assert normalize_overrides(["tasks=[a]", "eval.tasks=[b]", "seed=1"]) == ["eval.tasks=[a]", "eval.tasks=[b]", "seed=1"]
