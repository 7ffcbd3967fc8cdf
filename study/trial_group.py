"""Multi-process trials inside a sweep: one leader that talks to Optuna, W&B and the results table,
followers that only train.

Why this design. Lightning's DDP launcher starts rank > 0 by re-running the process's own command
line; for `study sweep spec.yaml` that made every extra rank a second sweep worker (it popped trials,
failed them and printed the status table again). Here the ranks of a sweep worker are a *trial
group* that lives as long as the worker:

    rank 0 (leader)     the sweep loop: pops a trial, broadcasts its resolved config, trains its share,
                        evaluates, writes results/W&B, records the trial in Optuna, repeats
    rank > 0 (follower) `follow()`: waits for a trial config, trains its share (no run folder, no W&B,
                        no results, no storage), reports ok/failed, waits again; exits on "stop"

The ranks come from the launcher when there is one (torchrun, srun: every rank runs `study sweep`,
rank > 0 turns into a follower at once), or the leader starts them itself on this machine as
`python -m study trial-worker` processes (plain `study sweep` with trainer.devices > 1). Either way
the ranks join one torch.distributed process group before the first trial (nccl on GPUs, gloo on CPUs)
which Lightning then reuses for every trial (it does not initialise a group that exists), plus a gloo
group with a long timeout for the control messages: a follower may wait hours for the next trial
while the leader evaluates or other workers finish the grid. Only params travel (a YAML config), so
nothing needs pickling and the workers import torch/Lightning once, not once per trial.

Alternatives not taken: `ddp_spawn` pickles the trial function and re-starts processes per trial (and
cannot run under srun/torchrun, where the ranks already exist); pointing Lightning's launcher at
another entry point needs a config file per trial and still re-imports everything per trial.

Failure: a trial that fails on every rank alike (bad config, NaN loss, pruning) leaves the group in
step. A rank that fails alone (out of memory on one GPU) blocks the others inside a collective until
the process-group timeout (`STUDY_DIST_TIMEOUT_MIN`, default 30 minutes); then the trial fails
everywhere and the group goes on. A dead leader ends the followers it started; under torchrun/srun
the launcher ends the job (use `srun --kill-on-bad-exit=1`).
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from study.errors import ConfigError
from study.launch import GROUP_ENV, Launch, detect, devices_count
from study.sweep.pruning import GroupPruning
from study.train import train_and_evaluate

log = logging.getLogger(__name__)

# The control group's timeout: how long a follower waits for the leader's next message.
CONTROL_TIMEOUT = dt.timedelta(days=7)
STOP = None
_current: "TrialGroup | None" = None


def current() -> "TrialGroup | None":
    """The trial group of this process (leader side), or None for a one-process worker."""
    return _current


def _timeout() -> dt.timedelta:
    return dt.timedelta(minutes=float(os.environ.get("STUDY_DIST_TIMEOUT_MIN", "30")))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _backend(accelerator: str) -> str:
    import torch

    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "nccl" if gpu else "gloo"


class TrialGroup:
    """The process group of one sweep worker; the leader's handle to send trials to its followers."""

    def __init__(self, launch: Launch, control, children: list[subprocess.Popen], saved_env: dict | None = None):
        self.launch = launch
        self.control = control
        self.children = children
        self.saved_env = saved_env or {}  # this process's launch variables before it became rank 0

    # ------------------------------------------------------------ leader side

    def broadcast(self, message) -> None:
        import torch.distributed as dist

        box = [message]
        dist.broadcast_object_list(box, src=0, group=self.control)

    def statuses(self, mine: str = "") -> list[str]:
        """Each rank's trial outcome ('' = ok), gathered after every trial to keep the ranks in step."""
        import torch.distributed as dist

        out = [None] * self.launch.world_size
        dist.all_gather_object(out, mine, group=self.control)
        return out

    @contextmanager
    def trial(self, cfg, run_dir: Path, prune: bool):
        """Leader: send the trial to the followers, run it here, then collect their outcomes."""
        from omegaconf import OmegaConf

        self.broadcast({"config": OmegaConf.to_yaml(cfg, resolve=True), "run_dir": str(run_dir), "prune": prune})
        error = ""
        try:
            yield
        except BaseException as e:
            error = f"{type(e).__name__}: {e}"
            raise
        finally:
            for rank, status in enumerate(self.statuses(error)):
                if rank and status:
                    log.warning("trial %s: rank %d failed: %s", run_dir.name, rank, status[:300])

    def close(self, ok: bool = True) -> None:
        """Stop the followers: a "stop" message after a clean sweep; after an error, end the ones started
        here (they may be inside a collective that will never complete; torchrun/srun end their own)."""
        global _current
        try:
            if ok:
                self.broadcast(STOP)
        finally:
            for p in self.children:
                try:
                    p.wait(timeout=60 if ok else 0.1)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            _destroy()
            for key, value in self.saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            _current = None


@contextmanager
def running(trainer_cfg):
    """A worker's lifetime: its trial group (if trials span several processes), closed at the end."""
    group = start(trainer_cfg)
    ok = False
    try:
        yield group
        ok = True
    finally:
        if group is not None:
            group.close(ok)


@contextmanager
def scope(cfg, run_dir: Path, prune: bool):
    """Around one trial on the leader: its followers train it too (a no-op without a group)."""
    if _current is None:
        yield
    else:
        with _current.trial(cfg, run_dir, prune):
            yield


def _destroy() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _init(launch: Launch, backend: str):
    """Join the default process group (Lightning reuses it) and create the gloo control group."""
    import torch.distributed as dist

    if launch.kind == "slurm" and not {"MASTER_ADDR", "MASTER_PORT"} <= set(os.environ):
        # srun sets neither: Lightning's rule (first node of the job, port from the job id) sets both.
        from lightning.fabric.plugins.environments import SLURMEnvironment

        env = SLURMEnvironment(auto_requeue=False)
        env.main_address, env.main_port  # noqa: B018 - reading them exports MASTER_ADDR / MASTER_PORT
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=launch.rank, world_size=launch.world_size, timeout=_timeout())
    return dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)


def start(trainer_cfg, launch: Launch | None = None) -> TrialGroup | None:
    """Leader: the group for trials of this trainer config, or None when a trial is one process.

    Under torchrun/srun the ranks exist; otherwise trainer.devices - 1 followers are started here."""
    global _current

    launch = launch or detect()
    children: list[subprocess.Popen] = []
    saved: dict = {}
    if not launch.external:
        local = devices_count(trainer_cfg.devices, trainer_cfg.accelerator)
        if trainer_cfg.num_nodes > 1:
            raise ConfigError(f"trainer.num_nodes={trainer_cfg.num_nodes} needs a launcher that starts the ranks "
                              "on every node: run the sweep under srun or torchrun (docs/cluster.md)")
        if local == 1:
            return None
        saved = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
                                                "NODE_RANK", "RANK", "LOCAL_RANK", "OMP_NUM_THREADS", GROUP_ENV)}
        launch, children = _start_followers(local, trainer_cfg.accelerator)
    elif launch.world_size == 1:
        return None
    try:
        control = _init(launch, _backend(trainer_cfg.accelerator))
    except BaseException:
        for p in children:
            p.kill()
        os.environ.update({k: v for k, v in saved.items() if v is not None})
        for k in [k for k, v in saved.items() if v is None]:
            os.environ.pop(k, None)
        raise
    _current = TrialGroup(launch, control, children, saved)
    log.info("trial group: %d processes (%s launch), this process is rank 0", launch.world_size, launch.kind)
    return _current


def _start_followers(n: int, accelerator: str) -> tuple[Launch, list[subprocess.Popen]]:
    """Start ranks 1..n-1 on this machine and make this process rank 0 (torchrun-style environment)."""
    common = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(n),
              "LOCAL_WORLD_SIZE": str(n), "NODE_RANK": "0", GROUP_ENV: "1"}
    if accelerator == "cpu" or (accelerator == "auto" and _backend(accelerator) == "gloo"):
        # The ranks share this machine's cores: each gets its share of threads unless the user set one.
        common.setdefault("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // n)))
    children = []
    for rank in range(1, n):
        env = {**os.environ, **common, "RANK": str(rank), "LOCAL_RANK": str(rank)}
        children.append(subprocess.Popen([sys.executable, "-m", "study", "trial-worker", accelerator], env=env))
    os.environ.update({**common, "RANK": "0", "LOCAL_RANK": "0"})
    if "OMP_NUM_THREADS" in common:
        import torch

        torch.set_num_threads(int(common["OMP_NUM_THREADS"]))
    return detect(), children


# ---------------------------------------------------------------- follower side


def follow(accelerator: str, launch: Launch | None = None) -> int:
    """Rank > 0: take part in each trial the leader broadcasts, until it says stop. Writes nothing.

    `accelerator` (the sweep's trainer.accelerator) picks the same backend as the leader's."""
    import torch.distributed as dist
    from omegaconf import OmegaConf

    launch = launch or detect()
    box = [None]
    control = _init(launch, _backend(accelerator))
    group = TrialGroup(launch, control, [])
    while True:
        dist.broadcast_object_list(box, src=0, group=control)
        job = box[0]
        if job is STOP:
            break
        error = ""
        try:
            _train_share(OmegaConf.create(job["config"]), Path(job["run_dir"]), job["prune"])
        except BaseException as e:  # the leader records the trial; this rank only reports and goes on
            error = f"{type(e).__name__}: {e}"
        group.statuses(error)
        gc.collect()
    _destroy()
    return 0


def _train_share(cfg, run_dir: Path, prune: bool) -> None:

    train_and_evaluate(cfg, run_dir=run_dir, callbacks=(GroupPruning(None),) if prune else ())
