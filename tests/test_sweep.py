"""Optuna sweeps: spec validation, dispatch, failures, pruning, W&B runs, the study table.

The tests that need concurrency or SIGKILL run real `study sweep` worker processes
(SQLite and PostgreSQL storage); the rest run workers in-process.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from run_helpers import TINY_BASE, write_sweep_spec

from study.cli import main
from study.errors import ConfigError
from study.sweep.spec import load_spec
from study.sweep.storage import mask_url, open_storage

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
GRID = {"model.attention": {"type": "categorical", "choices": ["bidirectional", "causal"]},
        "model.pooling": {"type": "categorical", "choices": ["mean", "last_token"]}}


def write_spec(tmp_path: Path, name: str = "tiny", **changes) -> Path:
    return write_sweep_spec(tmp_path, name, TINY_BASE, **{"space": GRID, **changes})


def cells(study: optuna.Study) -> Counter:
    return Counter(json.dumps({k: v for k, v in sorted(t.params.items())})
                   for t in study.get_trials(states=(TrialState.COMPLETE,)))


def wandb_records(run_file: Path) -> list:
    """Decode an offline run-*.wandb file (LevelDB log format of wandb Record protobufs)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, out, buf = run_file.read_bytes(), 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            out.append(chunk)
        elif kind in (2, 3):
            buf = (buf if kind == 3 else b"") + chunk
        elif kind == 4:
            out.append(buf + chunk)
    records = []
    for raw in out:
        rec = pb.Record()
        rec.ParseFromString(raw)
        records.append(rec)
    return records


def wandb_run_info(trial_dir: Path) -> dict:
    files = list(trial_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    runs = [r.run for r in wandb_records(files[0]) if r.WhichOneof("record_type") == "run"]
    exits = [r.exit.exit_code for r in wandb_records(files[0]) if r.WhichOneof("record_type") == "exit"]
    config = {item.key: json.loads(item.value_json) for item in runs[0].config.update}
    return {"group": runs[0].run_group, "name": runs[0].display_name, "job_type": runs[0].job_type,
            "tags": set(runs[-1].tags), "config": config, "exit": exits}


# ---------------------------------------------------------------- validation (fast)


@pytest.mark.parametrize("change, message", [
    ({"space": {"model.atention": GRID["model.attention"]}}, "unknown config key 'model.atention'. Did you mean 'model.attention'"),
    ({"space": {"model.pooling": {"type": "categorical", "choices": []}}}, "must be a non-empty list"),
    ({"space": {"model.pooling": {"type": "categorical", "choices": ["mean", "sum"]}}}, "'sum' is not valid; choose one of: mean, last_token"),
    ({"space": {"seed": {"type": "categorical", "choices": [0, 1]}}}, "use `seeds: [...]`"),
    ({"space": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-3}}}, "sampler=grid needs categorical or int"),
    ({"space": {"optim.lr": {"type": "flaot", "low": 1, "high": 2}}}, "type='flaot' is not valid; choose one of: categorical, int, float"),
    ({"sampler": "bayes"}, "sampler='bayes' is not valid; choose one of: grid, tpe, random"),
    ({"objective": {"metric": "average/ndcg@1"}}, "objective.metric='average/ndcg@1' is not reported"),
    ({"objective": {"metric": "needle/ndcg_at_1"}}, "task in ['passkey']"),
    ({"objective": {"metric": "passkey/512/ndcg_at_1"}}, "length in [128]"),
    ({"objective": {"metric": "average/ndcg_at_1", "direction": "up"}}, "direction='up' is not valid; choose one of: maximize, minimize"),
    ({"seeds": []}, "seeds=[] must be a non-empty list"),
    ({"n_trials": 4}, "n_trials=4 is for sampler tpe | random"),
    ({"sampler": "tpe", "space": GRID}, "n_trials=None must be a positive integer"),
    ({"sampler": "tpe", "n_trials": 3, "seeds": [0, 1]}, "give one seed"),
    ({"pruner": {"type": "median"}}, "pruner must be none for sampler=grid"),
    ({"pruner": {"type": "hyperband"}}, "pruner.type='hyperband' is not valid; choose one of: median, threshold, none"),
    ({"budget": 3}, "unknown key 'budget'; valid keys: name, description"),
    ({"base": {"trainer": {"max_step": 3}}}, "unknown config key 'trainer.max_step'"),
    ({"base": {**TINY_BASE, "seed": 3}}, "base may not set 'seed'"),
])
def test_bad_specs_are_refused_before_anything_starts(tmp_path, change, message):
    path = write_spec(tmp_path, **change)
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert message in str(err.value)
    assert not (tmp_path / "runs").exists()


def test_cli_exit_code_2_and_no_study_on_bad_spec(tmp_path, capsys):
    path = write_spec(tmp_path, space={"model.pooling": {"type": "categorical", "choices": ["mean", "sum"]}})
    assert main(["sweep", str(path)]) == 2
    assert "'sum' is not valid" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    assert main(["status", "nope", "--storage", f"sqlite:///{tmp_path}/x.db"]) == 2
    assert "no study 'nope'" in capsys.readouterr().err


def test_a_spec_on_an_unbuilt_pretrained_backbone_says_how_to_build_it(monkeypatch, tmp_path):
    import study.backbones.registry

    monkeypatch.setattr(study.backbones.registry, "pretrained_folder", lambda name: None)
    spec = tmp_path / "pair.yaml"
    spec.write_text("name: pair\nspace:\n  model.backbone: {type: categorical, choices: [tiny-ar, tiny-diffusion]}\n"
                    "sampler: grid\nseeds: [0]\nobjective: {metric: average/ndcg_at_1, direction: maximize}\n")
    with pytest.raises(ConfigError, match="'tiny-ar' has not been pretrained yet.*study pretrain objective=autoregressive"):
        load_spec(spec)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The shipped sweeps/ files, each loaded (and validated: seconds) once; the sweeps on the pretrained pair
    see stand-in builds (validation only resolves names)."""
    import study.backbones.registry

    stand_in = tmp_path_factory.mktemp("builds")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(study.backbones.registry, "pretrained_folder",
                   lambda name: stand_in if name in ("tiny-ar", "tiny-diffusion") else None)
        return {name: load_spec(Path(__file__).parent.parent / "sweeps" / name)
                for name in ("attention_pooling.yaml", "tune_lr_temperature.yaml")}


def test_default_sweep_is_a_10_seed_attention_x_pooling_grid_on_mini_qwen2(shipped):
    grid = shipped["attention_pooling.yaml"]
    assert grid.sampler == "grid" and len(grid.seeds) == 10 and grid.base["model.backbone"] == "mini-qwen2"
    cells = grid.cells()
    assert len(cells) == 10 * 2 * 2 and len(cells) == len({json.dumps(c, sort_keys=True) for c in cells})
    assert {c["model.attention"] for c in cells} == {"bidirectional", "causal"}
    assert {c["model.pooling"] for c in cells} == {"mean", "weighted_mean"}


def test_default_sweep_grid_is_seed_major_with_the_attention_pair_adjacent(shipped):
    cells = shipped["attention_pooling.yaml"].cells()
    # seed-major, attention innermost: each consecutive pair of cells is one paired comparison
    assert [c["seed"] for c in cells[:4]] == [0] * 4
    for a, b in zip(cells[::2], cells[1::2]):
        assert {k: v for k, v in a.items() if k != "model.attention"} == {k: v for k, v in b.items() if k != "model.attention"}
        assert {a["model.attention"], b["model.attention"]} == {"bidirectional", "causal"}


def test_tuning_sweep_is_tpe_with_median_pruning_on_log_scales(shipped):
    tune = shipped["tune_lr_temperature.yaml"]
    assert tune.sampler == "tpe" and tune.pruner["type"] == "median"
    assert tune.space["optim.lr"].log and tune.space["loss.temperature"].log


def test_credentials_are_masked():
    assert mask_url("postgresql://bob:s3cret@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert "s3cret" not in mask_url("mysql://db/x?user=bob&password=s3cret")
    assert mask_url("sqlite:///runs/a/optuna.db") == "sqlite:///runs/a/optuna.db"


# ---------------------------------------------------------------- dispatch without training (fast)


@pytest.fixture(scope="module", params=["sqlite", "journal"])
def crash_then_rerun(request, tmp_path_factory):
    """A 2-cell sweep whose `last_token` trial raises (the NaN-loss error study/module.py raises) on the first
    run only; the same command run again; then the same study name with a changed spec. One scenario per
    storage backend, read by the tests below."""
    from study.sweep import dispatch
    from study.train import RunResult

    tmp_path, backend = tmp_path_factory.mktemp("crash"), request.param
    calls = []

    def fake_train(self, trial, params, run_dir):
        calls.append(params["model.pooling"])
        if params["model.pooling"] == "last_token" and len(calls) <= 2:
            raise FloatingPointError("non-finite training loss (nan) at step 2")
        return RunResult(run_dir, "x", "x", {"average/ndcg_at_1": 0.5 + len(calls) / 100}, pd.DataFrame())

    path = write_spec(tmp_path, space={"model.pooling": GRID["model.pooling"]})
    url = f"sqlite:///{tmp_path}/runs/tiny/optuna.db" if backend == "sqlite" else str(tmp_path / "shared" / "s.journal")
    storage = ["--storage", url] if backend == "journal" else []

    def load():
        return optuna.load_study(study_name="tiny", storage=dispatch.open_storage(url))

    r = SimpleNamespace()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dispatch.TrialRunner, "_train", fake_train)
        with contextlib.redirect_stdout(io.StringIO()) as out:
            r.first_rc = main(["sweep", str(path), *storage])
        r.first_out, r.failed = out.getvalue(), load().get_trials(states=(TrialState.FAIL,))
        with contextlib.redirect_stdout(io.StringIO()):
            r.rerun_rc = main(["sweep", str(path), *storage])
            r.calls, r.cells = list(calls), cells(load())
            r.status_rc = main(["status", "tiny", "--storage", url])
        changed = write_spec(tmp_path, space={"model.pooling": GRID["model.pooling"]}, seeds=[0, 1])
        with contextlib.redirect_stderr(io.StringIO()) as err:
            r.changed_rc = main(["sweep", str(changed), *storage])
        r.changed_err, r.trials_after_changed = err.getvalue(), len(load().trials)
    return r


def test_crashing_trial_is_recorded_fail_with_its_reason_and_the_sweep_goes_on(crash_then_rerun):
    r = crash_then_rerun
    assert r.first_rc == 1  # a cell has no COMPLETE trial
    assert "FloatingPointError: non-finite training loss" in r.first_out and "COMPLETE 1" in r.first_out
    assert "FAIL 1" in r.first_out
    assert len(r.failed) == 1 and r.failed[0].params["model.pooling"] == "last_token"
    assert r.failed[0].user_attrs["fail_reason"].startswith("FloatingPointError")


def test_rerunning_a_sweep_retries_only_the_failed_cell(crash_then_rerun):
    r = crash_then_rerun
    assert r.rerun_rc == 0 and r.status_rc == 0
    assert sorted(r.calls) == ["last_token", "last_token", "mean"]  # COMPLETE "mean" never reran
    assert set(r.cells.values()) == {1} and len(r.cells) == 2


def test_the_same_study_name_with_a_changed_spec_is_refused_and_nothing_queued(crash_then_rerun):
    r = crash_then_rerun
    assert r.changed_rc == 2 and "created from a different sweep spec" in r.changed_err
    assert r.trials_after_changed == 3


def test_a_cell_queued_twice_runs_once(tmp_path, monkeypatch):
    """Two machines enqueueing at the same instant can queue a cell twice: the later copy steps aside."""
    from study.sweep import dispatch
    from study.train import RunResult

    ran = []
    monkeypatch.setattr(dispatch.TrialRunner, "_train", lambda self, trial, params, run_dir: ran.append(
        trial.number) or RunResult(run_dir, "x", "x", {"average/ndcg_at_1": 0.5}, pd.DataFrame()))
    path = write_spec(tmp_path, space={"model.pooling": GRID["model.pooling"]})
    sweep = dispatch.make_sweep(path, storage=str(tmp_path / "s.journal"))
    study = dispatch.prepare_study(sweep)
    study.enqueue_trial({"model.pooling": "mean", "seed": 0})  # the other machine's copy
    dispatch.work(sweep)
    trials = study.get_trials()
    assert ran == [0, 1] and [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL]
    assert trials[2].user_attrs["skipped"] == "duplicate of trial 0"
    assert dispatch.prepare_study(sweep) and len(study.get_trials()) == 3  # resume queues nothing new


# ---------------------------------------------------------------- real trials


@pytest.mark.slow
def test_tpe_pruning_marks_trials_pruned_in_storage_and_wandb(tmp_path):
    from study.sweep.dispatch import run_sweep

    path = write_spec(
        tmp_path, name="prune", sampler="tpe", n_trials=2,
        space={"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}},
        base={**TINY_BASE, "output_dir": str(tmp_path / "runs"),
              "trainer": {**TINY_BASE["trainer"], "val_check_interval": 1}},
        # val/accuracy is at most 1, so a lower threshold above 1 prunes at the first report.
        pruner={"type": "threshold", "lower": 1.01, "n_warmup_steps": 0},
    )
    run_sweep(path)
    study = optuna.load_study(study_name="prune", storage=f"sqlite:///{tmp_path}/runs/prune/optuna.db")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.PRUNED]
    for t in trials:
        assert list(t.intermediate_values) == [1]  # reported at the global step
        assert 1e-4 <= t.params["optim.lr"] <= 1e-3
        trial_dir = tmp_path / "runs" / "prune" / "trials" / str(t.number)
        assert not (trial_dir / "results.parquet").exists()
        info = wandb_run_info(trial_dir)
        assert "pruned" in info["tags"] and info["exit"] == [0] and info["group"] == "prune"
        assert "pruned" in json.loads((trial_dir / "wandb.json").read_text())["tags"]


def _postgres_or_skip() -> str:
    try:
        import psycopg2

        psycopg2.connect(POSTGRES, connect_timeout=3).close()
    except Exception as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but PostgreSQL at {POSTGRES} is unreachable: {e}")
        pytest.skip(f"no PostgreSQL at {POSTGRES}: {e}")
    # trust auth accepts any password: one in the URL checks that it never leaks.
    return "postgresql://postgres:hunter2secret@127.0.0.1:5432/test"


def _study_cmd(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "study"), *args]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_workers_killed_mid_trial_then_resumed_cover_the_grid_exactly_once(tmp_path, backend):
    """2 worker processes on a 4-cell grid; SIGKILL everything mid-trial (a machine dying); run
    the same command again: every cell COMPLETE exactly once, finished trials' files untouched."""
    name = f"kill-{uuid.uuid4().hex[:8]}"
    path = write_spec(tmp_path, name=name)
    study_dir = tmp_path / "runs" / name
    url = _postgres_or_skip() if backend == "postgresql" else f"sqlite:///{study_dir}/optuna.db"
    cmd = _study_cmd("sweep", str(path), "--workers", "2") + (["--storage", url] if backend != "sqlite" else [])
    storage = open_storage(url) if backend != "sqlite" else None
    try:
        _kill_and_resume(tmp_path, name, path, study_dir, url, storage, cmd, backend)
    finally:
        if name in optuna.get_all_study_names(storage or url):
            optuna.delete_study(study_name=name, storage=storage or url)


def _kill_and_resume(tmp_path, name, path, study_dir, url, storage, cmd, backend):
    log1 = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(cmd, stdout=log1, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 900  # a cold cache (tokenizer, pairs) on a busy machine is slow
        while time.time() < deadline:
            time.sleep(0.5)
            try:
                study = optuna.load_study(study_name=name, storage=storage or url)
            except Exception:
                continue
            states = Counter(t.state for t in study.get_trials())
            if states[TrialState.COMPLETE] >= 1 and states[TrialState.RUNNING] >= 1:
                break
        else:
            pytest.fail("no trial completed: " + (tmp_path / "first.log").read_text()[-2000:])
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the parent and both workers, mid-trial
        first.wait()
    study = optuna.load_study(study_name=name, storage=storage or url)
    done = {t.number for t in study.get_trials(states=(TrialState.COMPLETE,))}
    killed = {t.number for t in study.get_trials(states=(TrialState.RUNNING,))}
    assert done and killed
    kept = {n: (study_dir / "trials" / str(n) / "results.parquet").read_bytes() for n in done}
    kept_wandb = {n: sorted(p.name for p in (study_dir / "trials" / str(n)).glob("wandb/offline-run-*/*.wandb"))
                  for n in done}

    second = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    study = optuna.load_study(study_name=name, storage=storage or url)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(cells(study)) == 4 and set(cells(study).values()) == {1}
    for t in study.get_trials(deepcopy=False):
        if t.number in killed:  # detected by heartbeat, failed, and its cell queued again
            assert t.state == TrialState.FAIL
    retried = [t for t in complete if t.system_attrs.get("retry_history")]
    assert {t.system_attrs["retry_history"][0] for t in retried} == killed
    # Finished trials were neither rerun nor rewritten.
    assert done <= {t.number for t in complete}
    for n, data in kept.items():
        assert (study_dir / "trials" / str(n) / "results.parquet").read_bytes() == data
        assert sorted(p.name for p in (study_dir / "trials" / str(n)).glob("wandb/offline-run-*/*.wandb")) == kept_wandb[n]

    # The study table: one trial's rows per COMPLETE trial, with study/trial columns.
    table = pd.read_parquet(study_dir / "results.parquet")
    assert set(table.study) == {name}
    assert set(table.trial) == {t.number for t in complete}
    per_trial = table.groupby("trial").size()
    assert per_trial.nunique() == 1 and per_trial.iloc[0] > 0
    for t in complete:
        rows = table[table.trial == t.number]
        assert set(rows.attention) == {t.params["model.attention"]}
        # One spelling: a swept ablation key is its ablation column, never a second `model.pooling` column.
        assert set(rows.pooling) == {t.params["model.pooling"]} and "model.pooling" not in rows
        agg = rows[rows.query_id.isna() & rows.length.isna() & (rows.metric == "ndcg_at_1")]
        assert agg.value.item() == pytest.approx(t.value)
        # One offline W&B run per trial, grouped by study, named and tagged by the trial.
        # A killed trial that had already written its results is adopted by its retry, W&B run included.
        ran_as = t.system_attrs["retry_history"][-1] if t.user_attrs.get("reused_results") else t.number
        info = wandb_run_info(study_dir / "trials" / str(t.number))
        assert info["group"] == name and info["name"] == f"trial-{ran_as}" and info["job_type"] == "train"
        assert f"attention={t.params['model.attention']}" in info["tags"]
        assert info["config"]["trial"] == ran_as and info["config"]["study"] == name
        assert info["config"]["model"]["pooling"] == t.params["model.pooling"]

    status = subprocess.run(_study_cmd("status", name, "--storage", url), capture_output=True, text=True)
    assert status.returncode == 0 and "COMPLETE 4" in status.stdout
    if backend == "postgresql":
        secret = "hunter2secret"
        assert secret not in second.stdout + second.stderr + status.stdout + status.stderr
        assert secret not in (tmp_path / "first.log").read_text()
        for f in study_dir.rglob("*"):
            if f.is_file():
                assert secret.encode() not in f.read_bytes(), f
        assert "postgres:***@" in status.stdout


def test_grid_runs_seed_major_with_attention_pairs_adjacent(tmp_path):
    """A grid stopped after its first seed already holds every bidirectional/causal pair of that seed."""
    path = tmp_path / "grid.yaml"
    path.write_text(
        "name: order\nbase: {model: {backbone: tiny-qwen2}}\n"
        "space:\n  model.attention: {type: categorical, choices: [bidirectional, causal]}\n"
        "  model.pooling: {type: categorical, choices: [mean, last_token]}\n"
        "sampler: grid\nseeds: [0, 1, 2]\nobjective: {metric: average/ndcg_at_1, direction: maximize}\n")
    cells = load_spec(path).cells()
    assert [c["seed"] for c in cells] == [0] * 4 + [1] * 4 + [2] * 4
    for first, second in zip(cells[::2], cells[1::2]):
        assert {first["model.attention"], second["model.attention"]} == {"bidirectional", "causal"}
        assert first["model.pooling"] == second["model.pooling"] and first["seed"] == second["seed"]
