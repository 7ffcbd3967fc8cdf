"""The sweep's time budget stops only between seed blocks, so every finished seed keeps all of its cells."""

import time
from datetime import datetime

from optuna.trial import FrozenTrial, TrialState

from study.sweep.dispatch import out_of_time


def trial(number: int, state: TrialState, seed: int, seconds: float | None = None) -> FrozenTrial:
    done = state == TrialState.COMPLETE
    return FrozenTrial(number=number, state=state, value=0.5 if done else None,
                       datetime_start=datetime.now() if state != TrialState.WAITING else None,
                       datetime_complete=datetime.now() if done else None, params={}, distributions={},
                       user_attrs={"trial_seconds": seconds} if seconds else {},
                       system_attrs={"fixed_params": {"seed": seed, "model.attention": "causal"}},
                       intermediate_values={}, trial_id=number)


def grid(done: int, seconds: float = 50.0, block: int = 4, seeds: int = 3) -> list[FrozenTrial]:
    """`seeds` x `block` queued seed-major, the first `done` of them finished."""
    return [trial(n, TrialState.COMPLETE if n < done else TrialState.WAITING, n // block, seconds)
            for n in range(seeds * block)]


def test_no_budget_never_stops():
    assert not out_of_time(grid(4), None, last_seed=0, block=4)


def test_a_new_seed_block_starts_only_if_it_fits():
    now = time.time()
    # next is seed 1 (trial 4); a block costs 4 x 50 s = 200 s
    assert not out_of_time(grid(4), now + 300, last_seed=0, block=4)
    assert out_of_time(grid(4), now + 150, last_seed=0, block=4)


def test_a_started_block_is_finished_even_past_the_deadline():
    now = time.time()
    assert not out_of_time(grid(5), now - 10, last_seed=1, block=4)  # trial 5 is still seed 1
    assert out_of_time(grid(8), now - 10, last_seed=1, block=4)  # trial 8 opens seed 2


def test_first_block_runs_unless_the_deadline_has_passed():
    now = time.time()
    assert not out_of_time(grid(0), now + 1, last_seed=None, block=4)  # no trial time known yet
    assert out_of_time(grid(0), now - 1, last_seed=None, block=4)


def test_median_trial_time_sets_the_block_cost():
    now = time.time()
    slow = grid(4, seconds=100.0)
    assert out_of_time(slow, now + 300, last_seed=0, block=4)  # 400 s needed
    assert not out_of_time(slow, now + 500, last_seed=0, block=4)
