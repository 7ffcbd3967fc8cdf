"""A sweep whose trials use DDP on 2 CPU processes (gloo): every cell runs once, only rank 0 writes, and
the results equal the same cells on one process at the same global batch (2 x 4 = 1 x 8)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState
from safetensors.torch import load_file

from study.cli import main

BASE = {
    # fp32 everywhere: on a CPU with native bf16, precision=auto would pick bf16, whose rounding differs between
    # one process and two far beyond the tolerances below.
    "trainer": {"max_steps": 3, "val_check_interval": 3, "log_every_n_steps": 1, "accelerator": "cpu",
                "precision": "32-true"},
    "optim": {"lr": 1.0e-3, "warmup_steps": 0},  # big enough steps that a different data order would show
    "data": {"num_pairs": 32, "num_val_pairs": 8, "doc_max_words": 80},
    "eval": {"lengths": [128], "num_queries": 4, "num_docs": 8, "tasks": ["passkey"], "precision": "32-true"},
    "model": {"max_length": 128},
    "save_model": True,
}
GRID = {"model.pooling": {"type": "categorical", "choices": ["mean", "last_token"]}}
KEYS = ["trial", "task", "length", "depth_bucket", "query_id", "metric"]


def write_spec(tmp_path: Path, name: str, trainer: dict, grid: dict = GRID) -> Path:
    base = {**BASE, "output_dir": str(tmp_path / "runs"), "trainer": {**BASE["trainer"], **trainer}}
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(yaml.safe_dump({"name": name, "base": base, "space": grid, "sampler": "grid", "seeds": [0]}))
    return spec


def weights(trial_dir: Path) -> dict:
    return load_file(trial_dir / "model" / "model.safetensors")


@pytest.mark.slow
def test_ddp_sweep_runs_each_cell_once_and_matches_one_process(tmp_path):
    # A fresh process, as a user runs it: its rank 1 is started by the sweep worker (study/trial_group.py).
    ddp = subprocess.run([sys.executable, "-m", "study.cli", "sweep",
                          str(write_spec(tmp_path, "ddp", {"strategy": "ddp", "devices": 2, "batch_size": 4}))],
                         capture_output=True, text=True, timeout=600)
    ddp_dir = tmp_path / "runs" / "ddp"
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]
    assert ddp.stdout.count("states:") == 1  # one status table: rank 1 was never a second sweep worker
    assert "states: RUNNING 0, COMPLETE 2, PRUNED 0, FAIL 0, WAITING 0" in ddp.stdout
    study = optuna.load_study(study_name="ddp", storage=f"sqlite:///{ddp_dir}/optuna.db")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert sorted(t.params["model.pooling"] for t in trials) == ["last_token", "mean"]
    # Only rank 0 wrote: one run folder per trial, each with one W&B run; nothing else in the study folder.
    assert sorted(p.name for p in ddp_dir.iterdir()) == [".results.lock", "optuna.db", "results.parquet",
                                                         "sweep.yaml", "trials"]
    assert sorted(p.name for p in (ddp_dir / "trials").iterdir()) == ["0", "1"]
    for t in trials:
        assert len(list((ddp_dir / "trials" / str(t.number)).glob("wandb/offline-run-*/run-*.wandb"))) == 1

    # The reference runs in this process (one interpreter start less).
    assert main(["sweep", str(write_spec(tmp_path, "one", {"devices": 1, "batch_size": 8}))]) == 0
    one_dir = tmp_path / "runs" / "one"
    a, b = pd.read_parquet(ddp_dir / "results.parquet"), pd.read_parquet(one_dir / "results.parquet")
    both = a.merge(b, on=KEYS, suffixes=("_ddp", "_one"))
    assert len(both) == len(a) == len(b) > 0
    assert (both.value_ddp - both.value_one).abs().max() <= 1e-6
    # Tolerance: the DDP update may differ from the one-process update by 0.1% of its size. fp32 sums run in
    # another order (gathered negatives, gradients averaged over 2 processes) and Adam magnifies that noise on
    # the few weights whose gradient is ~0 (measured: 1e-4 relative, max 5e-4 absolute on 30 of 2M embedding
    # weights). A changed data order or a lost gradient gives a difference the size of the update itself.
    init = _initial_weights(tmp_path)
    for n in ("0", "1"):
        w_ddp, w_one = weights(ddp_dir / "trials" / n), weights(one_dir / "trials" / n)
        update = _norm({k: w_one[k] - init[k] for k in init})
        assert update > 1.0  # the weights did train
        assert _norm({k: w_ddp[k] - w_one[k] for k in init}) < 1e-3 * update


def _norm(tensors: dict) -> float:
    return sum(float((t.double() ** 2).sum()) for t in tensors.values()) ** 0.5


def _initial_weights(tmp_path: Path) -> dict:
    from study.backbones.loading import load_backbone
    from study.config import load_config

    cfg = load_config(None, ["seed=0"])
    load_backbone(cfg.model, seed=0).model.save_pretrained(tmp_path / "init")
    return load_file(tmp_path / "init" / "model.safetensors")


FAKE_SRUN = """#!/bin/bash
# srun's job on one machine: SLURM_NTASKS copies of the command, each with the variables srun sets per task.
while [[ "$1" == --* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NODEID=0 "$@" & pids+=($!); done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
"""


@pytest.mark.slow
def test_sbatch_script_runs_a_ddp_worker_under_srun(tmp_path):
    """scripts/sbatch_sweep.sh as SLURM runs it (srun stood in for by 2 local tasks): rank 0 sweeps,
    SLURM rank 1 trains with it, the rendezvous comes from the job's variables, one run is recorded."""
    import os

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text(FAKE_SRUN)
    (tmp_path / "bin" / "srun").chmod(0o755)
    one_cell = {"model.pooling": {"type": "categorical", "choices": ["mean"]}}
    spec = write_spec(tmp_path, "slurm", {"strategy": "ddp", "batch_size": 4}, one_cell)  # devices: from SLURM
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "PY": sys.executable,
           "STUDY_SWEEP_STORAGE": str(tmp_path / "study.journal"), "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "2",
           "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_JOB_NAME": "study-sweep",
           "SLURM_NODELIST": "localhost", "SLURM_SUBMIT_DIR": str(tmp_path), "SLURM_CPUS_PER_TASK": "1"}
    script = Path(__file__).parent.parent / "scripts" / "sbatch_sweep.sh"
    done = subprocess.run(["bash", str(script), str(spec)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("states:") == 1 and "COMPLETE 1, PRUNED 0, FAIL 0" in done.stdout
    trial = tmp_path / "runs" / "slurm" / "trials" / "0"
    assert (trial / "results.parquet").is_file()
    assert len(list(trial.glob("wandb/offline-run-*/run-*.wandb"))) == 1
    assert "(slurm launch)" in done.stderr and "trial group: 2 processes" in done.stderr
