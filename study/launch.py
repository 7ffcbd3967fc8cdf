"""Who launched this process, which rank is it, and does it do the side effects?

    launcher    environment it sets (read here)                                        our name
    torchrun    TORCHELASTIC_RUN_ID, RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK   torchrun
    srun        SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS, SLURM_NTASKS_PER_NODE, SLURM_NNODES,    slurm
                SLURM_NODEID, SLURM_JOB_ID (sbatch without srun: SLURM_NTASKS unset -> single)
    our trial group (study/trial_group.py), or Lightning's own subprocess launcher:
                LOCAL_RANK, NODE_RANK, WORLD_SIZE (+ RANK, LOCAL_WORLD_SIZE from ours)    env
    nothing     a single process                                                          single

Exactly one process of a launch does side effects -- the run folder, the results table, the W&B run,
the Optuna storage: the one with global rank 0 (`is_side_effect_process`). The others train (and
take part in collectives) only.

torchrun is checked before SLURM, so `srun -n1 torchrun --nproc-per-node=8 ...` (one SLURM task
that starts 8 ranks) is a torchrun launch; Lightning itself would take it for a 1-task SLURM job.
A SLURM job named `bash` or `interactive` (an `salloc` shell) is not a SLURM launch, as in Lightning.

`placement` turns a launch into the Trainer's devices / num_nodes / cluster plugin: under an external
launcher they come from the environment (a config that disagrees is logged and overridden), so the
same sweep file runs on a laptop, under torchrun and under srun.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Mapping

from study.errors import ConfigError

log = logging.getLogger(__name__)

# Set by study/trial_group.py on the processes of a trial group it starts itself.
GROUP_ENV = "STUDY_TRIAL_GROUP"
INTERACTIVE_SLURM_JOBS = ("bash", "interactive")


@dataclass(frozen=True)
class Launch:
    kind: str  # single | torchrun | slurm | env
    rank: int  # global rank
    local_rank: int
    world_size: int
    local_world_size: int  # processes on this machine
    node_rank: int

    @property
    def num_nodes(self) -> int:
        return max(1, self.world_size // max(1, self.local_world_size))

    @property
    def external(self) -> bool:
        """The ranks exist already (torchrun, srun, our trial group, Lightning's launcher)."""
        return self.kind != "single"

    @property
    def is_zero(self) -> bool:
        return self.rank == 0


SINGLE = Launch("single", 0, 0, 1, 1, 0)


def _int(env: Mapping[str, str], key: str, default: int | None = None) -> int | None:
    value = env.get(key)
    if value is None or value == "":
        return default
    # SLURM_NTASKS_PER_NODE can look like "4(x2)" (4 tasks on each of 2 nodes).
    return int(value.split("(")[0].split(",")[0])


def detect(env: Mapping[str, str] | None = None) -> Launch:
    """The launch this process belongs to, from its environment variables."""
    env = os.environ if env is None else env
    if "TORCHELASTIC_RUN_ID" in env or ("RANK" in env and "LOCAL_WORLD_SIZE" in env and GROUP_ENV not in env):
        world = _int(env, "WORLD_SIZE", 1)
        local_world = _int(env, "LOCAL_WORLD_SIZE", world)
        return Launch("torchrun", _int(env, "RANK", 0), _int(env, "LOCAL_RANK", 0), world, local_world,
                      _int(env, "GROUP_RANK", _int(env, "NODE_RANK", 0)))
    if "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in INTERACTIVE_SLURM_JOBS:
        world = _int(env, "SLURM_NTASKS", 1)
        nodes = _int(env, "SLURM_NNODES", _int(env, "SLURM_JOB_NUM_NODES", 1))
        local_world = _int(env, "SLURM_NTASKS_PER_NODE", max(1, world // max(1, nodes)))
        return Launch("slurm", _int(env, "SLURM_PROCID", 0), _int(env, "SLURM_LOCALID", 0), world, local_world,
                      _int(env, "SLURM_NODEID", 0))
    if "LOCAL_RANK" in env:
        local_rank, node_rank = _int(env, "LOCAL_RANK", 0), _int(env, "NODE_RANK", 0)
        world = _int(env, "WORLD_SIZE", 1)
        local_world = _int(env, "LOCAL_WORLD_SIZE", world)
        # Lightning's launcher sets no RANK; its global rank is zero exactly on node 0, local rank 0.
        rank = _int(env, "RANK", node_rank * local_world + local_rank)
        return Launch("env", rank, local_rank, world, local_world, node_rank)
    return SINGLE


def is_side_effect_process(env: Mapping[str, str] | None = None) -> bool:
    """True for the one process of a launch that writes run folders, results, W&B runs and Optuna trials."""
    return detect(env).is_zero


def devices_count(devices: str, accelerator: str = "auto") -> int:
    """How many processes on one machine a Lightning `devices` setting asks for."""
    value = str(devices).strip().strip("[]")
    if value in ("auto", "-1"):
        if accelerator == "cpu":
            return 1
        import torch

        return max(1, torch.cuda.device_count()) if accelerator in ("auto", "gpu", "cuda") else 1
    if "," in value:
        return len([v for v in value.split(",") if v.strip()])
    try:
        return max(1, int(value))
    except ValueError:

        raise ConfigError(f"trainer.devices={devices!r} is not valid; give a count (2), a list of ids ([0,1]), "
                          "auto or -1") from None


def placement(trainer_cfg, launch: Launch | None = None) -> dict:
    """Trainer kwargs devices, num_nodes, plugins for this launch (the environment wins over the config)."""
    launch = launch or detect()
    if not launch.external:
        return {"devices": trainer_cfg.devices, "num_nodes": trainer_cfg.num_nodes, "plugins": None}
    # Lazy: keeps `import study.launch` light (the CLI imports it before every command).
    from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment, TorchElasticEnvironment

    wanted = (devices_count(trainer_cfg.devices, trainer_cfg.accelerator) if str(trainer_cfg.devices) != "auto"
              else None, trainer_cfg.num_nodes)
    got = (launch.local_world_size, launch.num_nodes)
    if wanted[0] is not None and wanted != got and launch.is_zero:
        log.warning("trainer.devices=%s, trainer.num_nodes=%s, but %s started %d processes per node on %d nodes: "
                    "using those", trainer_cfg.devices, trainer_cfg.num_nodes, launch.kind, *got)
    env = {"torchrun": TorchElasticEnvironment, "env": LightningEnvironment}.get(launch.kind)
    # No automatic requeue: a sweep re-queues a dead worker's trial through the storage heartbeat instead.
    plugin = env() if env is not None else SLURMEnvironment(auto_requeue=False)
    return {"devices": launch.local_world_size, "num_nodes": launch.num_nodes, "plugins": [plugin]}
