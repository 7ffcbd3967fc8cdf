"""Launch detection (torchrun, srun, Lightning's launcher, none) and rank-0-only side effects,
with faked environment variables: what one machine can test of the cluster paths."""

from __future__ import annotations

import pytest
import yaml
from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment, TorchElasticEnvironment
from omegaconf import OmegaConf

from study import launch
from study.config import load_config
from study.errors import ConfigError

TORCHRUN = {"TORCHELASTIC_RUN_ID": "abc", "RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8",
            "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "29500"}
SLURM = {"SLURM_JOB_ID": "123456", "SLURM_JOB_NAME": "sweep", "SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4(x2)",
         "SLURM_NNODES": "2", "SLURM_PROCID": "6", "SLURM_LOCALID": "2", "SLURM_NODEID": "1"}
LAUNCH_VARS = set(TORCHRUN) | set(SLURM) | {"NODE_RANK", "SLURM_JOB_NUM_NODES", launch.GROUP_ENV}


@pytest.mark.parametrize("env, expected", [
    ({}, launch.Launch("single", 0, 0, 1, 1, 0)),
    (TORCHRUN, launch.Launch("torchrun", 5, 1, 8, 4, 1)),
    (SLURM, launch.Launch("slurm", 6, 2, 8, 4, 1)),
    ({**SLURM, "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}, launch.Launch("slurm", 0, 0, 8, 4, 0)),
    # An salloc shell is not a launch (Lightning's rule), nor is a batch script without srun.
    ({**SLURM, "SLURM_JOB_NAME": "interactive"}, launch.SINGLE),
    ({"SLURM_JOB_ID": "1", "SLURM_PROCID": "0"}, launch.SINGLE),
    # srun -n1 torchrun --nproc-per-node=4: torchrun's ranks, not one SLURM task.
    ({**SLURM, "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "1", "SLURM_PROCID": "0",
      "TORCHELASTIC_RUN_ID": "x", "RANK": "3", "LOCAL_RANK": "3", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4"},
     launch.Launch("torchrun", 3, 3, 4, 4, 0)),
    # Lightning's own subprocess launcher (study train trainer.devices=2): rank 1 of 2.
    ({"LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "2"}, launch.Launch("env", 1, 1, 2, 2, 0)),
    # Our trial group's followers.
    ({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", launch.GROUP_ENV: "1"},
     launch.Launch("env", 1, 1, 2, 2, 0)),
])
def test_detect(env, expected):
    got = launch.detect(env)
    assert got == expected
    assert launch.is_side_effect_process(env) == (expected.rank == 0)


def test_num_nodes_and_side_effect_process():
    assert launch.detect(TORCHRUN).num_nodes == 2 and launch.detect(SLURM).num_nodes == 2
    assert not launch.is_side_effect_process(TORCHRUN)
    assert launch.is_side_effect_process({**TORCHRUN, "RANK": "0", "LOCAL_RANK": "0"})
    # Lightning's launcher on node 1: local rank 0 there is not global rank 0.
    assert not launch.is_side_effect_process({"LOCAL_RANK": "0", "NODE_RANK": "1", "WORLD_SIZE": "4"})


@pytest.mark.parametrize("devices, accelerator, n", [("auto", "cpu", 1), ("2", "cpu", 2), ("[0,1,2]", "gpu", 3),
                                                     ("0,1", "gpu", 2), ("1", "auto", 1)])
def test_devices_count(devices, accelerator, n):
    assert launch.devices_count(devices, accelerator) == n


def test_devices_count_refuses_nonsense():
    with pytest.raises(ConfigError, match="trainer.devices='two' is not valid"):
        launch.devices_count("two")


def test_placement_takes_devices_and_nodes_from_the_launcher(caplog):
    trainer = OmegaConf.create({"devices": "2", "num_nodes": 1, "accelerator": "gpu"})
    assert launch.placement(trainer, launch.SINGLE) == {"devices": "2", "num_nodes": 1, "plugins": None}
    for env, plugin in ((TORCHRUN, TorchElasticEnvironment), (SLURM, SLURMEnvironment)):
        got = launch.placement(trainer, launch.detect({**env, "RANK": "0", "SLURM_PROCID": "0"}))
        assert got["devices"] == 4 and got["num_nodes"] == 2
        assert len(got["plugins"]) == 1 and type(got["plugins"][0]) is plugin
    assert "trainer.devices=2, trainer.num_nodes=1, but torchrun started 4 processes per node on 2 nodes" in caplog.text
    got = launch.placement(trainer, launch.Launch("env", 1, 1, 2, 2, 0))
    assert got["devices"] == 2 and type(got["plugins"][0]) is LightningEnvironment


@pytest.fixture
def clean_env(monkeypatch):
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_non_zero_rank_writes_no_run_folder_and_no_wandb(clean_env, tmp_path):
    from study.train import prepare_outputs, run_logger

    cfg = load_config(None, [f"output_dir={tmp_path / 'runs'}", "run_name=r"])
    for var, value in {**SLURM, "SLURM_PROCID": "1"}.items():
        clean_env.setenv(var, value)
    run_dir = prepare_outputs(cfg)
    assert run_dir == tmp_path / "runs" / "r"
    assert run_logger(cfg, run_dir, "id", "r", {}, None) is False
    assert not (tmp_path / "runs").exists()
    clean_env.setenv("SLURM_PROCID", "0")
    assert (prepare_outputs(cfg) / "config.yaml").is_file()
    logger = run_logger(cfg, run_dir, "id", "r", {}, None)
    assert logger is not False and logger.save_dir == str(run_dir)


@pytest.mark.parametrize("env", [{**SLURM, "SLURM_PROCID": "3"}, {**TORCHRUN, "RANK": "1"}])
def test_non_zero_rank_of_a_sweep_follows_and_touches_no_storage(clean_env, tmp_path, env):
    """Under srun/torchrun every rank runs `study sweep`; rank > 0 must not open the study, pop trials,
    write the study folder or print the status: it joins the trial group as a follower."""
    from study.cli import main
    from study.sweep import dispatch

    followed = []
    clean_env.setattr(dispatch.trial_group, "follow", lambda accelerator, how: followed.append((accelerator, how)) or 0)
    clean_env.setattr(dispatch, "prepare_study", lambda sweep: pytest.fail("rank > 0 created the study"))
    for var, value in env.items():
        clean_env.setenv(var, value)
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "s", "base": {"output_dir": str(tmp_path / "runs"), "trainer": {"accelerator": "cpu"}},
        "space": {"model.pooling": {"type": "categorical", "choices": ["mean", "last_token"]}}}))
    assert main(["sweep", str(spec), "--storage", f"sqlite:///{tmp_path}/o.db"]) == 0
    assert len(followed) == 1 and followed[0][0] == "cpu" and followed[0][1].rank != 0
    assert not (tmp_path / "runs").exists() and not (tmp_path / "o.db").exists()


def test_launched_sweep_refuses_local_workers(clean_env, tmp_path, capsys):
    from study.cli import main

    for var, value in {**TORCHRUN, "RANK": "0"}.items():
        clean_env.setenv(var, value)
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "s", "base": {"output_dir": str(tmp_path / "runs")}}))
    assert main(["sweep", str(spec), "--workers", "2"]) == 2
    assert "--workers 2: under torchrun each launched group of ranks is one worker" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_process_layout_is_not_sweepable_and_fsdp_needs_gpus(tmp_path):
    from study.sweep.spec import load_spec

    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "s", "space": {"trainer.devices": {"type": "categorical",
                                                                               "choices": ["1", "2"]}}}))
    with pytest.raises(ConfigError, match="space may not sweep 'trainer.devices'"):
        load_spec(spec)
    with pytest.raises(ConfigError, match="trainer.strategy='fsdp' needs GPUs.*choose one of: auto, ddp"):
        load_config(None, ["trainer.strategy=fsdp", "trainer.accelerator=cpu"])


def test_multi_node_without_a_launcher_is_refused(clean_env):
    from study import trial_group

    trainer = OmegaConf.create({"devices": "2", "num_nodes": 2, "accelerator": "cpu"})
    with pytest.raises(ConfigError, match="trainer.num_nodes=2 needs a launcher.*srun or torchrun"):
        trial_group.start(trainer)
    assert trial_group.start(OmegaConf.create({"devices": "1", "num_nodes": 1, "accelerator": "cpu"})) is None


def test_slurm_group_gets_its_rendezvous_address_from_the_job(clean_env):
    """srun sets no MASTER_ADDR/PORT; the trial group takes Lightning's: first node of the list, 15000 + job id tail."""
    from study import trial_group

    for var, value in {**SLURM, "SLURM_PROCID": "0", "SLURM_NODELIST": "gpu[07-08]"}.items():
        clean_env.setenv(var, value)
    for var in ("MASTER_ADDR", "MASTER_PORT"):  # set then deleted: monkeypatch removes what the code sets
        clean_env.setenv(var, "x")
        clean_env.delenv(var)
    seen = {}
    clean_env.setattr("torch.distributed.is_initialized", lambda: True)  # stop before a real rendezvous
    clean_env.setattr("torch.distributed.new_group", lambda **kw: seen.update(kw) or "control")
    assert trial_group._init(launch.detect(), "nccl") == "control"
    import os

    assert os.environ["MASTER_ADDR"] == "gpu07" and os.environ["MASTER_PORT"] == str(15000 + 3456)
    assert seen["backend"] == "gloo" and seen["timeout"] == trial_group.CONTROL_TIMEOUT


def test_closing_a_group_restores_the_launch_variables(clean_env):
    """A worker that started its own followers was rank 0 only while its group lived."""
    from study import trial_group

    clean_env.setenv("MASTER_PORT", "1")
    clean_env.setattr("torch.distributed.is_initialized", lambda: False)
    group = trial_group.TrialGroup(launch.Launch("env", 0, 0, 2, 2, 0), None, [],
                                   {"MASTER_PORT": "1", "RANK": None, launch.GROUP_ENV: None})
    import os

    os.environ.update(MASTER_PORT="29999", RANK="0", **{launch.GROUP_ENV: "1"})
    group.close(ok=False)
    assert os.environ["MASTER_PORT"] == "1" and "RANK" not in os.environ and launch.GROUP_ENV not in os.environ
    assert launch.detect() == launch.SINGLE
