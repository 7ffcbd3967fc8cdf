"""Create a study once, queue its grid once, and let worker processes run trials in-process.

Why in-process: a trial is one call of study.train.train_and_evaluate inside a
long-lived worker, so Python, torch, Lightning and transformers are imported once
per worker instead of once per trial (a fresh `study train` process spends several
seconds on imports alone). Isolation comes from the try/except around each trial:
an exception, a NaN loss (FloatingPointError) or an out-of-memory error marks the
trial FAIL with its reason (user attr fail_reason) and the worker goes on. A worker
that dies outright (SIGKILL, power loss) stops its storage heartbeat; another
worker notices and re-queues the cell.

No duplicates, none skipped: the parent creates the study and enqueues every grid
cell (params x seeds) that has no live trial yet, before any worker starts; workers
only pop WAITING trials (Optuna's GridSampler would run cells twice with several
workers). Two machines that enqueue at the same moment can queue a cell twice: the
higher-numbered copy notices at its start and ends as FAIL with user attr
skipped = "duplicate of trial k", so every cell still completes exactly once.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from study import interrupts, trial_group
from study.backbones.loading import check_loadable
from study.config import flatten, load_config
from study.errors import ConfigError
from study.evaluate import summary
from study.launch import detect as detect_launch
from study.paths import writable_dir
from study.results import POINTER, TABLE, swept_columns, write_table
from study.sweep.pruning import GroupPruning
from study.sweep.spec import NAME, SweepSpec, cell_key, dotlist, load_spec, trial_cell
from study.sweep.status import print_status, rebuild_study_table
from study.sweep.storage import check_url, default_url, mask_url, open_storage
from study.train import train_and_evaluate

log = logging.getLogger(__name__)

# The storage URL reaches worker subprocesses through the environment, not argv,
# so a password in it never shows in `ps`.
STORAGE_ENV = "STUDY_SWEEP_STORAGE"
# A time budget (unix time) after which a grid worker starts no new seed block: `study demo --budget-minutes`.
DEADLINE_ENV = "STUDY_SWEEP_DEADLINE"
LIVE = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)


class SkippedTrial(Exception):
    """A trial that must not run: its cell is already covered, or no queued cell was left."""


@dataclass
class Sweep:
    spec: SweepSpec
    name: str
    study_dir: Path
    storage_url: str  # may hold a password: log mask_url(storage_url) only
    spec_path: Path

    def storage(self):
        return open_storage(self.storage_url, self.spec.heartbeat_interval, self.spec.grace_period,
                            self.spec.max_retries)

    def sampler(self) -> optuna.samplers.BaseSampler:
        # Grid trials take their params from the queue; the sampler only matters for tpe/random.
        return optuna.samplers.TPESampler() if self.spec.sampler == "tpe" else optuna.samplers.RandomSampler()

    def pruner(self) -> optuna.pruners.BasePruner:
        p = self.spec.pruner
        if p["type"] == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=p.get("n_startup_trials", 5),
                                               n_warmup_steps=p.get("n_warmup_steps", 0))
        if p["type"] == "threshold":
            return optuna.pruners.ThresholdPruner(lower=p.get("lower"), upper=p.get("upper"),
                                                  n_warmup_steps=p.get("n_warmup_steps", 0))
        return optuna.pruners.NopPruner()

    def load(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.storage(), sampler=self.sampler(),
                                 pruner=self.pruner())


def make_sweep(spec_path: str | Path, storage: str | None = None, study_name: str | None = None) -> Sweep:
    spec = load_spec(spec_path)
    name = study_name or spec.name
    if not NAME.fullmatch(name):
        raise ConfigError(f"--study-name {name!r} must be a folder-safe name (letters, digits, . _ + -)")
    base = load_config(None, dotlist(spec.base))
    study_dir = (Path(base.output_dir) / name).resolve()
    if not writable_dir(study_dir):
        raise ConfigError(f"output_dir={base.output_dir!r}: cannot create the study folder {str(study_dir)!r} "
                          "there (a file is in the way, or the folder is not writable)")
    url = storage or os.environ.get(STORAGE_ENV) or default_url(study_dir)
    check_url(url)

    for backbone in sorted({cell.get("model.backbone", base.model.backbone) for cell in _sample_cells(spec)}):
        check_loadable(backbone)
    return Sweep(spec, name, study_dir, url, Path(spec_path))


def _sample_cells(spec: SweepSpec) -> list[dict]:
    """The grid's cells, or for tpe/random each categorical choice once (enough to name every backbone)."""
    if spec.grid:
        return spec.cells()
    return [{k: v} for k, p in spec.space.items() if p.type == "categorical" for v in p.choices] or [{}]


# ---------------------------------------------------------------- the study, created once


def prepare_study(sweep: Sweep) -> optuna.Study:
    """Create (or reopen) the study, check it was made from the same spec, queue missing grid cells."""
    spec = sweep.spec
    storage = sweep.storage()  # a storage that cannot be opened is refused before the study folder exists
    study = optuna.create_study(study_name=sweep.name, storage=storage, sampler=sweep.sampler(),
                                pruner=sweep.pruner(), direction=spec.direction, load_if_exists=True)
    stored = study.user_attrs.get("sweep_spec")
    if stored is None:
        study.set_user_attr("sweep_spec", spec.raw)
        study.set_user_attr("study_dir", str(sweep.study_dir))
        study.set_user_attr("objective", spec.metric)
    elif _normal(stored) != _normal(spec.raw):
        raise ConfigError(f"study {sweep.name!r} in {mask_url(sweep.storage_url)} was created from a different "
                          "sweep spec (space, base, seeds, sampler, objective or budget changed); "
                          "resume it with the original file or choose another --study-name")
    if study.direction.name.lower() != spec.direction:
        raise ConfigError(f"study {sweep.name!r} already exists with direction {study.direction.name.lower()}")
    sweep.study_dir.mkdir(parents=True, exist_ok=True)
    _copy_spec(sweep)
    if spec.grid and not spec.space:
        log.info("study %s: the space is empty: the grid is the base config once per seed (%s)", sweep.name,
                 ", ".join(map(str, spec.seeds)))
    if spec.grid:
        queued = enqueue_cells(study, spec)
        log.info("study %s: %d grid cells, %d newly queued (storage %s)", sweep.name, len(spec.cells()), queued,
                 mask_url(sweep.storage_url))
    return study


def _normal(raw: dict) -> str:
    return json.dumps(raw, sort_keys=True, default=str)


def _copy_spec(sweep: Sweep) -> None:
    target = sweep.study_dir / "sweep.yaml"
    if not target.exists():
        shutil.copyfile(sweep.spec_path, target)


def enqueue_cells(study: optuna.Study, spec: SweepSpec) -> int:
    """Queue each cell that has no live trial (WAITING, RUNNING, COMPLETE, PRUNED): resume, and retry FAILs."""
    covered = {trial_cell(t) for t in study.get_trials(deepcopy=False, states=LIVE)}
    n = 0
    for params in spec.cells():
        if cell_key(params) not in covered:
            study.enqueue_trial(params)
            n += 1
    return n


# ---------------------------------------------------------------- one trial


class TrialRunner:
    """The objective: one trial = one train_and_evaluate in this process, in runs/<study>/trials/<n>/."""

    def __init__(self, sweep: Sweep):
        self.sweep = sweep

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            return self._run(trial)
        except (SkippedTrial, optuna.TrialPruned):
            raise
        except BaseException as e:  # recorded, then Optuna marks the trial FAIL and the worker goes on
            stop = interrupts.from_exception(e)
            trial.set_user_attr("fail_reason", f"interrupted ({stop.name})" if stop else _reason(e))
            if stop:
                trial.set_user_attr("interrupted", stop.name)
            _close_wandb("interrupted" if stop else "failed")
            gc.collect()
            if stop:  # Optuna marks a trial FAIL on a KeyboardInterrupt (Lightning's SystemExit it leaves RUNNING)
                raise stop from None
            raise

    def config(self, trial: optuna.Trial, params: dict, run_dir: Path):
        """The trial's resolved config (what its folder's config.yaml must hold for the folder to be reused)."""
        per_trial = {"run_name": f"trial-{trial.number}", "output_dir": str(run_dir.parent),
                     "wandb.group": self.sweep.name, "wandb.job_type": "train"}
        return load_config(None, self.sweep.spec.overrides(params) + dotlist(per_trial))

    def _run(self, trial: optuna.Trial) -> float:
        started = time.perf_counter()
        spec = self.sweep.spec
        system_attrs = trial.storage.get_trial(trial._trial_id).system_attrs
        if spec.grid and "fixed_params" not in system_attrs:
            trial.set_user_attr("skipped", "nothing queued")
            raise SkippedTrial("no queued grid cell was left (another worker took the last one)")
        params = spec.suggest(trial)
        if spec.grid:
            self._check_owner(trial, params)
        run_dir = self.sweep.study_dir / "trials" / str(trial.number)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        cfg = self.config(trial, params, run_dir)
        scores = self._reuse(trial, run_dir, cfg, system_attrs.get("retry_history", []))
        train_s = eval_s = 0.0
        if scores is not None:  # finished before its worker died, with these very settings: never train it again
            trial.set_user_attr("reused_results", True)
        else:
            try:
                result = self._train(trial, params, run_dir)
            except optuna.TrialPruned as e:
                trial.set_user_attr("pruned", str(e))
                raise
            scores, train_s, eval_s = result.summary, result.train_seconds, result.eval_seconds
        if spec.metric not in scores:
            raise KeyError(f"objective.metric {spec.metric!r} not in the run's summary ({', '.join(sorted(scores))})")
        wall = time.perf_counter() - started
        for key, value in (("train_seconds", train_s), ("eval_seconds", eval_s), ("trial_seconds", wall),
                           ("overhead_seconds", wall - train_s - eval_s)):
            trial.set_user_attr(key, round(value, 3))
        log.info("trial %d %s -> %s=%.4f in %.1fs (train %.1fs, eval %.1fs, overhead %.1fs)", trial.number,
                 " ".join(spec.tags(params)), spec.metric, scores[spec.metric], wall, train_s, eval_s,
                 wall - train_s - eval_s)
        return scores[spec.metric]

    def _train(self, trial: optuna.Trial, params: dict, run_dir: Path):

        spec, name = self.sweep.spec, self.sweep.name
        cfg = self.config(trial, params, run_dir)
        callbacks = [] if spec.pruner["type"] == "none" else [step_pruning_callback(trial)]
        with trial_group.scope(cfg, run_dir, prune=bool(callbacks)):  # the worker's other ranks train it too
            return train_and_evaluate(
                cfg, run_dir=run_dir, identity={"study": name, "trial": trial.number},
                extra_columns=swept_columns({k: v for k, v in params.items() if k in spec.space}),
                callbacks=tuple(callbacks), wandb_tags=spec.tags(params),
            )

    @staticmethod
    def _check_owner(trial: optuna.Trial, params: dict) -> None:
        """The lowest-numbered live trial of a cell owns it; a later copy (double enqueue) steps aside."""
        key = cell_key(params)
        for t in trial.study.get_trials(deepcopy=False, states=LIVE):
            if t.number < trial.number and trial_cell(t) == key:
                trial.set_user_attr("skipped", f"duplicate of trial {t.number}")
                log.info("trial %d skipped: its cell is already run by trial %d (queued twice, e.g. by two sweep "
                         "commands)", trial.number, t.number)
                raise SkippedTrial(f"cell already covered by trial {t.number}")

    def _reuse(self, trial: optuna.Trial, run_dir: Path, cfg, retry_history: list[int]) -> dict | None:
        """The scores of a finished folder made from this trial's config, else None (and a clean run folder).

        A retried trial whose first attempt wrote its results before dying takes that folder over. A folder
        made from other settings (the study was recreated, the grid order changed) or without readable results
        is moved aside as trials/<n>.stale-<time>, never adopted."""
        for old in reversed(retry_history):
            old_dir = run_dir.parent / str(old)
            if not run_dir.exists() and finished_scores(old_dir, cfg) is not None:

                os.replace(old_dir, run_dir)
                write_table(_read_table(run_dir).assign(trial=trial.number), run_dir / TABLE)
                log.info("trial %d: reusing the finished results of trial %d", trial.number, old)
                break
        if not run_dir.exists():
            return None
        scores = finished_scores(run_dir, cfg)
        if scores is None:
            stale = run_dir.with_name(f"{run_dir.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
            os.replace(run_dir, stale)
            log.warning("trial %d: %s holds no finished run of this trial's settings; moved aside to %s",
                        trial.number, run_dir, stale.name)
        return scores


def _read_table(run_dir: Path):
    import pandas as pd

    return pd.read_parquet(run_dir / TABLE)


def same_settings(run_dir: Path, cfg) -> bool:
    """Whether run_dir/config.yaml holds `cfg` (up to the run's name and folder)."""
    from omegaconf import OmegaConf


    try:
        saved = flatten(OmegaConf.load(run_dir / "config.yaml"))
    except Exception:  # noqa: BLE001 - missing or unreadable: not the same settings
        return False
    ignore = ("run_name", "output_dir")
    mine = {k: v for k, v in flatten(cfg).items() if k not in ignore}
    return {k: v for k, v in saved.items() if k not in ignore} == mine


def finished_scores(run_dir: Path, cfg) -> dict | None:
    """The summary of a finished run folder of these settings; None if unfinished, unreadable or other settings.

    Finished means both records are whole: the results table, and the W&B pointer that tracking.finish writes
    only after the W&B run has closed (a worker killed between the two leaves a run W&B never recorded)."""
    if not (run_dir / TABLE).is_file() or not (run_dir / POINTER).is_file() or not same_settings(run_dir, cfg):
        return None
    try:
        return summary_of(_read_table(run_dir))
    except Exception as e:  # noqa: BLE001 - a corrupt table: rerun the trial
        log.warning("%s is unreadable (%s: %s)", run_dir / TABLE, type(e).__name__, e)
        return None


def step_pruning_callback(trial: optuna.Trial):
    """Report val/accuracy at the global step and prune on every rank at once (study/sweep/pruning.py)."""

    return GroupPruning(trial)


def summary_of(table) -> dict[str, float]:
    """The run summary (average/<metric>, <task>/<metric>, ...) rebuilt from a results table."""

    rows = table.astype(object).where(table.notna(), None).to_dict("records")
    return summary(rows)


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:500]


def _close_wandb(why: str = "failed") -> None:
    """A run that crashed outside train_and_evaluate's own handling leaves its W&B run open; finish it, tagged."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.run.tags = tuple(wandb.run.tags or ()) + (why,)
            wandb.run.finish(exit_code=1)
    except Exception as e:  # never let cleanup hide the trial's own error
        log.warning("could not close the W&B run: %s", e)


def update_table(sweep: Sweep, study: optuna.Study) -> None:
    """Rebuild the study table; a failure is a warning, never the trial's failure."""
    try:
        rebuild_study_table(sweep.study_dir, study)
    except Exception as e:  # noqa: BLE001
        log.warning("could not rebuild %s: %s: %s", sweep.study_dir / TABLE, type(e).__name__, e)


# ---------------------------------------------------------------- workers


class _TrialLogFilter(logging.Filter):
    """Optuna logs every failed trial with its traceback. A skipped duplicate is no failure (the trial logs one
    line itself) and an interrupt is no bug: neither gets a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, SkippedTrial):
            return False
        if isinstance(error, KeyboardInterrupt):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_optuna() -> None:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    optimize_log = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _TrialLogFilter) for f in optimize_log.filters):
        optimize_log.addFilter(_TrialLogFilter())


def budget_used(trials: list[optuna.trial.FrozenTrial]) -> int:
    """tpe/random trials that count against n_trials: not skipped, not failed-then-retried."""
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return sum(1 for t in trials if not (t.state == TrialState.FAIL and ("skipped" in t.user_attrs or t.number in retried)))


def _next_seed(trials: list[optuna.trial.FrozenTrial]):
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    return min(waiting, key=lambda t: t.number).system_attrs.get("fixed_params", {}).get("seed") if waiting else None


def out_of_time(trials: list[optuna.trial.FrozenTrial], deadline: float | None, last_seed, block: int) -> bool:
    """True when the next queued trial opens a seed block that would not finish by `deadline`.

    The grid is queued seed-major, so stopping between seed blocks leaves every finished seed with all of
    its cells (paired comparisons); a block already started is finished. A block's cost is `block` times
    the median trial time so far (unknown before the first trial: then it runs)."""
    if deadline is None:
        return False
    seed = _next_seed(trials)
    if seed is None or (last_seed is not None and seed == last_seed):
        return False
    times = [t.user_attrs["trial_seconds"] for t in trials
             if t.state == TrialState.COMPLETE and "trial_seconds" in t.user_attrs]
    need = block * float(np.median(times)) if times else 0.0
    return time.time() + need > deadline


def work(sweep: Sweep, deadline: float | None = None) -> int:
    """One worker: pop queued trials (grid) or ask the sampler (tpe/random) until the study is done.

    A grid worker with nothing left to pop waits while other trials are RUNNING: one
    may belong to a dead worker, and its cell comes back once the heartbeat is stale."""
    from optuna.storages import fail_stale_trials
    from optuna.storages._heartbeat import is_heartbeat_enabled

    _quiet_optuna()
    study = sweep.load()
    runner = TrialRunner(sweep)
    spec = sweep.spec
    beats = is_heartbeat_enabled(study._storage)
    if deadline is None and os.environ.get(DEADLINE_ENV):  # a spawned worker
        deadline = float(os.environ[DEADLINE_ENV])
    block = max(1, len(spec.cells()) // max(1, len(spec.seeds)))  # cells per seed
    last_seed = None
    while True:
        if beats:
            fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        states = Counter(t.state for t in trials)
        if spec.grid and out_of_time(trials, deadline, last_seed, block):
            log.info("time budget reached: %d queued trials left for a later run of the same command "
                     "(finished seeds are complete)", states[TrialState.WAITING])
            break
        last_seed = _next_seed(trials) if spec.grid else None
        if not states[TrialState.WAITING]:
            if spec.grid:
                if states[TrialState.RUNNING] and beats:
                    time.sleep(min(spec.heartbeat_interval, 5))
                    continue
                break
            if budget_used(trials) >= spec.n_trials:
                break
        study.optimize(runner, n_trials=1, catch=(Exception,), gc_after_trial=True)
        update_table(sweep, study)
    return 0


def _stop_workers(procs: list[subprocess.Popen], stop: "interrupts.Interrupted") -> None:
    """Pass a SIGTERM on to the workers at once; a Ctrl-C reaches them from the terminal, so only the ones
    still running after a moment get it. Then wait: each marks its running trial FAIL before it exits."""
    import signal

    if stop.signum == signal.SIGINT:
        time.sleep(2)
    for p in procs:
        if p.poll() is None:
            p.send_signal(stop.signum)
    for p in procs:
        while True:
            try:
                p.wait()
                break
            except KeyboardInterrupt:  # a second signal while the workers finish: keep waiting
                continue


def base_config(sweep: Sweep):
    return load_config(None, dotlist(sweep.spec.base))


def run_sweep(spec_path: str | Path, workers: int = 1, storage: str | None = None, study_name: str | None = None,
              worker_only: bool = False, budget_minutes: float | None = None) -> int:
    """`study sweep`: validate, create the study and queue the grid once, then run N workers
    (within `budget_minutes` of now, whole seed blocks only, when given)."""
    if workers < 1:
        raise ConfigError(f"--workers {workers} must be >= 1")
    deadline = time.time() + 60 * budget_minutes if budget_minutes is not None else None
    _quiet_optuna()
    sweep = make_sweep(spec_path, storage, study_name)
    launch = detect_launch()
    if launch.external and not launch.is_zero:  # torchrun/srun rank > 0: train the leader's trials, nothing else
        return trial_group.follow(base_config(sweep).trainer.accelerator, launch)
    if launch.external and workers > 1:
        raise ConfigError(f"--workers {workers}: under {launch.kind} each launched group of ranks is one worker; "
                          "start more workers with more launches (e.g. a SLURM job array), not --workers")
    if worker_only:
        with trial_group.running(base_config(sweep).trainer):
            return work(sweep, deadline)
    prepare_study(sweep)
    if workers == 1:
        with trial_group.running(base_config(sweep).trainer):  # this worker's other ranks, if trials span several
            work(sweep, deadline)
    else:
        env = {**os.environ, STORAGE_ENV: sweep.storage_url}
        if deadline is not None:
            env[DEADLINE_ENV] = str(deadline)
        # Workers share this machine's cores: without a setting of its own, each gets its share of
        # threads (oversubscribed torch threads spin and slow everyone down).
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
        cmd = [sys.executable, "-m", "study.cli", "sweep", str(spec_path), "--study-name", sweep.name, "--worker"]
        procs = [subprocess.Popen(cmd, env=env) for _ in range(workers)]
        try:
            codes = [p.wait() for p in procs]
        except interrupts.Interrupted as stop:
            _stop_workers(procs, stop)
            raise
        if any(codes):
            log.warning("worker exit codes: %s", codes)

    return print_status(sweep.name, sweep.storage_url)
