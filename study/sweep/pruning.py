"""Pruning a trial from its validation score, on one process or across a trial group.

The rank-0 process reports `val/accuracy` to Optuna at the global step (our runs validate every
trainer.val_check_interval steps inside one epoch, so an epoch-based report would land on step 0)
and asks the pruner; every rank then takes the same decision (`reduce_boolean_decision`, a
collective) and raises optuna.TrialPruned at the same point, so no rank is left waiting inside a
collective. Followers pass trial=None: they take part in the decision only and never touch Optuna.
optuna-integration's callback needs the trial object on every rank under DDP (and RDB storage),
which followers do not have.
"""

from __future__ import annotations

import optuna
from lightning.pytorch.callbacks import Callback


class GroupPruning(Callback):
    def __init__(self, trial: optuna.Trial | None, monitor: str = "val/accuracy"):
        self.trial = trial
        self.monitor = monitor

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        score = trainer.callback_metrics.get(self.monitor)
        step = trainer.global_step
        prune = False
        if self.trial is not None and trainer.is_global_zero and score is not None:
            self.trial.report(score.item(), step=step)
            prune = self.trial.should_prune()
        if trainer.strategy.reduce_boolean_decision(prune, all=False):
            shown = f"{score.item():.3f}" if score is not None else "?"
            raise optuna.TrialPruned(f"pruned at step {step} ({self.monitor}={shown})")
