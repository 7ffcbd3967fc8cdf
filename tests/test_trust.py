"""Issue 9 (trust): no silently wrong number, no leaked secret, true exit codes.

Fast tests run sweeps in-process with a stand-in for training (what they check is the dispatch around
it); the slow ones run real tiny trials in a `study` process (signals, secrets in W&B files).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from run_helpers import TINY_BASE, write_sweep_spec

from study.cli import main
from study.sweep.storage import mask_url

POOLING = {"model.pooling": {"type": "categorical", "choices": ["mean", "last_token"]}}


def write_spec(tmp_path: Path, name: str = "trust", **changes) -> Path:
    return write_sweep_spec(tmp_path, name, TINY_BASE, **{"space": POOLING, **changes})


def fake_run(score_of, calls: list | None = None, wandb_run: bool = False, closed: bool = True):
    """A stand-in for TrialRunner._train: writes what a finished run folder holds (config.yaml, optionally an
    offline W&B folder, results.parquet, then wandb.json unless `closed` is False: a worker killed before its
    W&B run closed) and returns its RunResult."""
    from study.config import load_config, save_config
    from study.results import make_table, write_table
    from study.sweep.spec import dotlist
    from study.train import RunResult

    def _train(self, trial, params, run_dir):
        if calls is not None:
            calls.append((trial.number, params["model.pooling"]))
        per_trial = {"run_name": f"trial-{trial.number}", "output_dir": str(run_dir.parent),
                     "wandb.group": self.sweep.name, "wandb.job_type": "train"}  # as TrialRunner sets them
        cfg = load_config(None, self.sweep.spec.overrides(params) + dotlist(per_trial))
        save_config(cfg, run_dir / "config.yaml")
        run_id = f"r{trial.number}x{len(calls or [])}"
        if wandb_run:
            (run_dir / "wandb" / f"offline-run-20261202_000000-{run_id}" / "files").mkdir(parents=True)
        value = score_of(params)  # may raise: a failing trial
        rows = [{"task": "passkey", "length": None, "metric": "ndcg_at_1", "value": value, "query_id": None,
                 "depth_bucket": None}]
        table = make_table(rows, {"study": self.sweep.name, "trial": trial.number, "seed": params["seed"],
                                  "pooling": params["model.pooling"]},
                           {"model.pooling": params["model.pooling"]})
        write_table(table, run_dir / "results.parquet")
        if closed:
            (run_dir / "wandb.json").write_text(json.dumps({"run_id": run_id, "mode": "offline" if wandb_run else "disabled"}))
        return RunResult(run_dir, "x", run_id, {"average/ndcg_at_1": value, "passkey/ndcg_at_1": value}, table)

    return _train


def load(tmp_path: Path, name: str = "trust") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/runs/{name}/optuna.db")


# ---------------------------------------------------------------- 9.2 old trial folders


def test_a_trial_folder_of_other_settings_is_moved_aside_not_reused(tmp_path, monkeypatch, caplog):
    """optuna.db removed, grid order changed: trials/0 now belongs to the other cell. Its results must not be
    adopted (the issue's lr=1e12 cell reported with an lr=1e-4 score)."""
    from study.sweep import dispatch

    calls = []
    scores = {"mean": 0.25, "last_token": 0.75}
    monkeypatch.setattr(dispatch.TrialRunner, "_train", fake_run(lambda p: scores[p["model.pooling"]], calls))
    path = write_spec(tmp_path)
    assert main(["sweep", str(path)]) == 0
    assert calls == [(0, "mean"), (1, "last_token")]
    (tmp_path / "runs" / "trust" / "optuna.db").unlink()
    reordered = write_spec(tmp_path, space={"model.pooling": {"type": "categorical", "choices": ["last_token", "mean"]}})
    caplog.set_level(logging.INFO, logger="study")
    assert main(["sweep", str(reordered)]) == 0
    assert calls[2:] == [(0, "last_token"), (1, "mean")]  # both retrained: neither folder matched its new cell
    study = load(tmp_path)
    assert {t.params["model.pooling"]: t.value for t in study.get_trials()} == scores
    stale = sorted(p.name for p in (tmp_path / "runs" / "trust" / "trials").iterdir() if ".stale-" in p.name)
    assert len(stale) == 2
    assert sum("moved aside" in r.getMessage() for r in caplog.records) == 2
    table = pd.read_parquet(tmp_path / "runs" / "trust" / "results.parquet")
    assert sorted(zip(table.trial, table["model.pooling"])) == [(0, "last_token"), (1, "mean")]


def test_a_finished_folder_of_the_same_settings_is_reused(tmp_path, monkeypatch):
    from study.sweep import dispatch

    calls = []
    monkeypatch.setattr(dispatch.TrialRunner, "_train", fake_run(lambda p: 0.5, calls))
    path = write_spec(tmp_path)
    assert main(["sweep", str(path)]) == 0
    (tmp_path / "runs" / "trust" / "optuna.db").unlink()
    assert main(["sweep", str(path)]) == 0
    assert len(calls) == 2  # same order, same settings: the finished folders are taken over, nothing retrains
    assert all(t.user_attrs.get("reused_results") for t in load(tmp_path).get_trials())


def test_a_folder_whose_wandb_run_never_closed_is_retrained_not_reused(tmp_path, monkeypatch):
    """Killed after writing results.parquet but before W&B closed: the folder is not a finished run."""
    from study.sweep import dispatch

    calls = []
    monkeypatch.setattr(dispatch.TrialRunner, "_train", fake_run(lambda p: 0.5, calls, closed=False))
    path = write_spec(tmp_path)
    assert main(["sweep", str(path)]) == 0
    (tmp_path / "runs" / "trust" / "optuna.db").unlink()
    monkeypatch.setattr(dispatch.TrialRunner, "_train", fake_run(lambda p: 0.5, calls))
    assert main(["sweep", str(path)]) == 0
    assert len(calls) == 4  # both cells trained again
    assert not any(t.user_attrs.get("reused_results") for t in load(tmp_path).get_trials())
    trials = tmp_path / "runs" / "trust" / "trials"
    assert sorted(p.name.split(".")[0] for p in trials.iterdir() if ".stale-" in p.name) == ["0", "1"]
    assert all((trials / n / "wandb.json").is_file() for n in ("0", "1"))


# ---------------------------------------------------------------- 9.3 corrupt trial tables


@pytest.fixture(scope="module")
def corrupt_table(tmp_path_factory):
    """A 2-trial sweep whose trial 0 table is broken while trial 1 runs; `study status`; then a stray copy of a
    cell's table (an attempt that failed after writing it) and `study status` again."""
    import shutil

    from study.sweep import dispatch

    tmp_path = tmp_path_factory.mktemp("corrupt")
    trials = tmp_path / "runs" / "trust" / "trials"

    def score(params):
        if params["model.pooling"] == "last_token":  # trial 1 starts after trial 0 finished: break 0's table
            (trials / "0" / "results.parquet").write_bytes(b"not a parquet file")
        return 0.5

    r = SimpleNamespace()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(io.StringIO()):
        mp.setattr(dispatch.TrialRunner, "_train", fake_run(score))
        mp.chdir(tmp_path)
        r.sweep_rc = main(["sweep", str(write_spec(tmp_path))])
        r.states = [t.state for t in load(tmp_path).get_trials()]
    with contextlib.redirect_stdout(io.StringIO()) as out, pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        r.status_rc = main(["status", "trust"])
    r.status_out = out.getvalue()
    r.table_trials = set(pd.read_parquet(tmp_path / "runs" / "trust" / "results.parquet").trial)

    (trials / "0" / "results.parquet").write_bytes((trials / "1" / "results.parquet").read_bytes())
    shutil.copytree(trials / "1", trials / "7")
    with contextlib.redirect_stdout(io.StringIO()), pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        r.stray_status_rc = main(["status", "trust"])
    r.stray_table = pd.read_parquet(tmp_path / "runs" / "trust" / "results.parquet")
    return r


def test_a_corrupt_trial_table_does_not_fail_the_other_trials(corrupt_table):
    assert corrupt_table.sweep_rc == 0
    assert corrupt_table.states == [TrialState.COMPLETE] * 2


def test_status_counts_a_trial_with_a_corrupt_table_but_leaves_its_rows_out(corrupt_table):
    assert corrupt_table.status_rc == 0 and "COMPLETE 2" in corrupt_table.status_out
    assert corrupt_table.table_trials == {1}


def test_a_stray_copy_of_a_trial_table_is_not_a_second_row_set(corrupt_table):
    assert corrupt_table.stray_status_rc == 0
    assert corrupt_table.stray_table.groupby("model.pooling").trial.nunique().max() == 1


# ---------------------------------------------------------------- 9.4 truncation


def test_an_eval_length_beyond_the_backbone_positions_is_announced(tokenizer, caplog):
    from study.config import load_config
    from study.inference import evaluate_embedder

    backbone = SimpleNamespace(tokenizer=tokenizer, max_positions=128, padding_side="left")
    embedder = SimpleNamespace(eval=lambda: None)
    caplog.set_level(logging.WARNING, logger="study")
    cfg = load_config(None, ["eval.lengths=[128,256]"])
    evaluate_embedder(cfg, embedder, backbone, "cpu", tasks=[])
    lines = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert len(lines) == 1 and "tiny-qwen2" in lines[0] and "128 positions" in lines[0] and "256" in lines[0]
    caplog.clear()
    evaluate_embedder(load_config(None, ["eval.lengths=[64,128]"]), embedder, backbone, "cpu", tasks=[])
    assert not [r for r in caplog.records if "truncated" in r.getMessage()]


# ---------------------------------------------------------------- 9.5 no training


def test_a_batch_larger_than_the_training_set_is_refused_before_the_run_folder(tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"query": f"q{i}", "positive": f"p{i}", "negatives": [f"n{i}"]}) + "\n"
                            for i in range(3)))
    out = tmp_path / "runs"
    code = main(["train", f"output_dir={out}", f"data.train={data}", "trainer.batch_size=4", "trainer.max_steps=2",
                 "eval.tasks=[passkey]", "eval.lengths=[64]", "eval.num_queries=2", "eval.num_docs=4",
                 "save_model=false", "wandb.mode=disabled"])
    assert code == 2
    err = capsys.readouterr().err
    assert "trainer.batch_size=4" in err and "training pairs" in err
    assert not out.exists()


# ---------------------------------------------------------------- 9.6 secrets


@pytest.mark.parametrize("url, secret", [
    ("postgresql://bob:s3cret@db:5432/x", "s3cret"),
    ("postgresql://bob:s3cr%2Ft@db:5432/x", "s3cr"),  # a '/' in the password
    ("postgresql://bob:a/b@db/x", "a/b"),
    ("postgresql://:s3cret@db/x", "s3cret"),  # empty user name
    ("mysql+pymysql://bob:p%40ss@db/x", "p%40ss"),
    ("mysql://db/x?user=bob&password=s3cret", "s3cret"),
])
def test_mask_url_hides_every_password(url, secret):
    masked = mask_url(url)
    assert secret not in masked and "***" in masked


def _study_python(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from study.cli import main; sys.exit(main())", *args]


def _env() -> dict:
    root = str(Path(__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.mark.slow
def test_no_file_a_sweep_writes_holds_the_storage_password(tmp_path):
    """--workers 1 (the default) on PostgreSQL with a password in --storage: W&B records the process's argv."""
    import uuid

    try:
        import psycopg2

        psycopg2.connect("postgresql://postgres@127.0.0.1:5432/test", connect_timeout=3).close()
    except Exception as e:  # noqa: BLE001
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but PostgreSQL is unreachable: {e}")
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432: {e}")
    name = f"secret-{uuid.uuid4().hex[:8]}"
    url = "postgresql://postgres:s3cr%2Ft0ken@127.0.0.1:5432/test"  # trust auth: any password is accepted
    path = write_spec(tmp_path, name=name, space={"model.pooling": {"type": "categorical", "choices": ["mean"]}},
                      base={**TINY_BASE, "output_dir": str(tmp_path / "runs"), "wandb": {"mode": "offline"}})
    env = {**_env(), "WANDB_MODE": "offline"}
    try:
        run = subprocess.run(_study_python("sweep", str(path), "--storage", url), capture_output=True, text=True,
                             env=env, cwd=tmp_path, timeout=1800)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        files = [f for f in tmp_path.rglob("*") if f.is_file()]
        assert any(f.suffix == ".wandb" for f in files)
        for secret in (b"s3cr/t0ken", b"s3cr%2Ft0ken", b"s3cr%2ft0ken"):
            assert secret.decode() not in run.stdout + run.stderr
            for f in files:
                assert secret not in f.read_bytes(), f
    finally:
        from study.sweep.storage import open_storage

        storage = open_storage(url)
        if name in optuna.get_all_study_names(storage):
            optuna.delete_study(study_name=name, storage=storage)


# ---------------------------------------------------------------- 9.7 / 9.8 signals


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_trial_exits_non_zero_marks_the_trial_fail_and_says_how_to_resume(tmp_path, signum):
    from study.sweep import dispatch

    path = write_spec(tmp_path, space={"model.pooling": {"type": "categorical", "choices": ["mean"]}},
                      base={**TINY_BASE, "output_dir": str(tmp_path / "runs"),
                            "trainer": {**TINY_BASE["trainer"], "max_steps": 400, "val_check_interval": 400}})
    proc = subprocess.Popen(_study_python("sweep", str(path)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**_env(), "WANDB_MODE": "offline"}, cwd=tmp_path)
    log = tmp_path / "runs" / "trust" / "trials" / "0" / "train.log"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and "backbone" in log.read_text():  # training has started
            break
        time.sleep(0.5)
    time.sleep(3)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, out[-2000:] + err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    resume = [line for line in err.splitlines() if "Resume with the same command" in line]
    assert len(resume) == 1 and f"study sweep {path}" in resume[0]
    study = load(tmp_path)
    trial = study.get_trials()[0]
    assert trial.state == TrialState.FAIL  # not RUNNING: a resume reruns it at once, no heartbeat grace
    assert trial.user_attrs["fail_reason"] == f"interrupted ({signal.Signals(signum).name})"
    sweep = dispatch.make_sweep(path)
    assert dispatch.enqueue_cells(study, sweep.spec) == 1
    assert "interrupted" in json.loads((log.parent / "wandb.json").read_text())["tags"]


def test_sigterm_during_the_demo_exits_143_with_the_resume_command(monkeypatch, capsys):
    import study.demo

    def setup(spec_path):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends

    monkeypatch.setattr(study.demo, "check_setup", setup)
    assert main(["demo", "--smoke"]) == 143
    err = capsys.readouterr().err
    assert "interrupted (SIGTERM)" in err and "Resume with the same command: study demo --smoke" in err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_ctrl_c_during_evaluation_exits_130_without_a_traceback(tmp_path, monkeypatch, capsys):
    import study.inference

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(study.inference, "evaluate_task", interrupt)
    code = main(["eval", "model.backbone=tiny-qwen2", "eval.tasks=[passkey]", "eval.lengths=[64]",
                 "eval.num_queries=2", "eval.num_docs=4", f"output_dir={tmp_path}", "wandb.mode=disabled"])
    assert code == 130
    err = capsys.readouterr().err
    assert "interrupted (SIGINT)" in err and "Traceback" not in err


def test_ctrl_c_during_training_is_an_interrupt_and_its_wandb_run_is_tagged(tmp_path):
    """Lightning turns a KeyboardInterrupt inside fit into sys.exit(1): it must come out as an interrupt."""
    import lightning.pytorch as pl

    from study.config import load_config
    from study.interrupts import Interrupted
    from study.train import train_and_evaluate

    class CtrlC(pl.Callback):
        def on_train_batch_start(self, *args):
            raise KeyboardInterrupt

    cfg = load_config(None, [f"output_dir={tmp_path}", "run_name=r", "trainer.max_steps=2", "trainer.batch_size=4",
                             "data.num_pairs=32", "data.num_val_pairs=0", "data.doc_max_words=80",
                             "eval.tasks=[passkey]", "eval.lengths=[64]", "eval.num_queries=2", "eval.num_docs=4",
                             "model.max_length=64", "save_model=false", "wandb.mode=offline"])
    with pytest.raises(Interrupted) as err:
        train_and_evaluate(cfg, callbacks=(CtrlC(),))
    assert err.value.exit_code == 130
    pointer = json.loads((tmp_path / "r" / "wandb.json").read_text())
    assert "interrupted" in pointer["tags"] and pointer["mode"] == "offline"
    assert not (tmp_path / "r" / "results.parquet").exists()


def test_status_wandb_dirs_lists_complete_trials_only(tmp_path, monkeypatch, capsys):
    from study.sweep import dispatch

    def score(params):
        if params["model.pooling"] == "last_token":
            raise FloatingPointError("non-finite training loss")
        return 0.5

    monkeypatch.setattr(dispatch.TrialRunner, "_train", fake_run(score, [], wandb_run=True))
    path = write_spec(tmp_path)
    assert main(["sweep", str(path)]) == 1
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    assert main(["status", "trust", "--wandb-dirs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    trials = tmp_path / "runs" / "trust" / "trials"
    assert [Path(p) for p in lines] == list((trials / "0" / "wandb").glob("offline-run-*"))
    assert list((trials / "1" / "wandb").glob("offline-run-*"))  # the failed attempt's run exists, unlisted


# ---------------------------------------------------------------- 9.9 duplicate cells


def test_a_skipped_duplicate_logs_one_line_and_no_traceback(tmp_path, monkeypatch, caplog):
    from study.sweep import dispatch

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    optuna_log = logging.getLogger("optuna")
    optuna_log.addHandler(handler)
    monkeypatch.setattr(dispatch.TrialRunner, "_train", fake_run(lambda p: 0.5))
    path = write_spec(tmp_path, space={"model.pooling": {"type": "categorical", "choices": ["mean"]}})
    sweep = dispatch.make_sweep(path)
    study = dispatch.prepare_study(sweep)
    study.enqueue_trial({"model.pooling": "mean", "seed": 0})  # a second sweep command's copy
    caplog.set_level(logging.INFO, logger="study")
    try:
        dispatch.work(sweep)
    finally:
        optuna_log.removeHandler(handler)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE, TrialState.FAIL]
    assert not [r for r in records if r.exc_info], [r.getMessage() for r in records if r.exc_info]
    skipped = [r.getMessage() for r in caplog.records if " skipped: " in r.getMessage()]
    assert len(skipped) == 1 and "trial 1" in skipped[0] and "trial 0" in skipped[0]
