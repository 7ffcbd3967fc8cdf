"""Power calculation: variance components recovered from simulated studies, predicted interval widths
matching the bootstrap, and the planner choosing the cheapest design that meets a target."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import power, stats
from analysis.references import ceiling_by_length, chance


def _simulated(var_seed: float, var_query: float, var_resid: float, seeds: int, queries: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.normal(0, np.sqrt(var_seed), size=(seeds, 1))
    b = rng.normal(0, np.sqrt(var_query), size=(1, queries))
    e = rng.normal(0, np.sqrt(var_resid), size=(seeds, queries))
    return 0.1 + a + b + e


def test_components_recover_the_simulated_variances():
    est = [power.components(_simulated(0.004, 0.09, 0.04, seeds=8, queries=400, seed=s)) for s in range(20)]
    assert np.mean([c.var_query for c in est]) == pytest.approx(0.09, rel=0.1)
    assert np.mean([c.var_resid for c in est]) == pytest.approx(0.04, rel=0.1)
    assert np.mean([c.var_seed for c in est]) == pytest.approx(0.004, rel=0.4)


def test_one_seed_puts_everything_in_the_query_component():
    c = power.components(_simulated(0.0, 0.05, 0.05, seeds=1, queries=500))
    assert c.var_seed == 0 and c.var_resid == 0
    assert c.var_query == pytest.approx(0.10, rel=0.2)


def _study(n_queries: int, effect: float = 0.1, seeds=(0, 1, 2)) -> pd.DataFrame:
    """Per-query rows of one backbone/pooling cell: 0/1 hits, paired across attention on shared draws."""
    rng = np.random.default_rng(1)
    rows = []
    for s in seeds:
        for task in ("a", "b"):
            u = rng.random(n_queries)
            for attention, p in (("bidirectional", 0.5 + effect), ("causal", 0.5)):
                rows += [dict(backbone="m", pooling="mean", attention=attention, seed=s, task=task, length=256,
                              query_id=f"{task}{q}", value=float(u[q] < p)) for q in range(n_queries)]
    return pd.DataFrame(rows)


def test_task_and_length_weights_are_hierarchical():
    from analysis.stats import unit_weights

    # task 0: one length of 2 queries; task 1: two lengths of 1 and 3 queries.
    w = unit_weights(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 0, 1, 1, 1, 1]))
    assert w.sum() == pytest.approx(1)
    assert w[:2].tolist() == [0.25, 0.25] and w[2] == 0.25 and w[3:].tolist() == pytest.approx([1 / 12] * 3)


def test_predicted_half_width_matches_the_bootstrap_interval():
    rows = _study(200)
    comp = power.cell_components(rows)
    predicted = float(power.half_width(comp, seeds=3).iloc[0])
    diff = stats.paired_differences(rows, ["backbone", "pooling"], n_resamples=4000)
    observed = float((diff.ci_high - diff.ci_low).iloc[0] / 2)
    assert predicted == pytest.approx(observed, rel=0.3)


def test_half_width_shrinks_with_queries_like_one_over_root_n():
    comp = power.cell_components(_study(100))
    w100 = float(power.half_width(comp, 3).iloc[0])
    w400 = float(power.half_width(comp, 3, 400).iloc[0])
    assert w400 < w100
    if float(comp.var_seed.iloc[0]) == 0:
        assert w400 == pytest.approx(w100 / 2, rel=0.01)


def test_plan_picks_the_cheapest_design_meeting_the_target():
    comp = pd.DataFrame([{"var_seed": 0.0, "var_query": 0.2, "var_resid": 0.1, "sum_sq_weights": 1 / 400,
                          "queries_per_group": 100}])
    cost = lambda q: 10.0 + 0.1 * q  # noqa: E731 - seconds per trial
    design, table = power.plan(comp, cells_per_seed=8, seconds_per_trial=cost, target=0.05)
    assert design is not None and design.worst_half_width <= 0.05
    cheaper = table[(table.minutes < design.minutes) & (table.worst_half_width <= 0.05)]
    assert cheaper.empty
    none, _ = power.plan(comp, cells_per_seed=8, seconds_per_trial=cost, target=0.001)
    assert none is None


def test_detectable_difference_is_2_8_standard_errors():
    assert power.detectable(0.01) == pytest.approx(0.028, abs=2e-4)


@pytest.mark.parametrize("metric,n,expected", [("ndcg_at_1", 30, 1 / 30), ("recall_at_10", 30, 1 / 3),
                                               ("mrr_at_10", 10, sum(1 / k for k in range(1, 11)) / 10),
                                               ("recall_at_10", 5, 1.0)])
def test_chance_levels(metric, n, expected):
    assert chance(metric, n) == pytest.approx(expected)


def test_chance_matches_a_random_ranking_by_simulation():
    from study.evaluate import score_split

    rng = np.random.default_rng(0)
    q = rng.normal(size=(2000, 8))
    d = rng.normal(size=(20, 8))
    d /= np.linalg.norm(d, axis=1, keepdims=True)  # equal norms: every document equally likely on top
    rows = score_split(q, d, [f"q{i}" for i in range(2000)], [f"d{j}" for j in range(20)],
                       {f"q{i}": {"d0": 1} for i in range(2000)})
    for metric in ("ndcg_at_1", "mrr_at_10", "ndcg_at_10"):
        sim = np.mean([v for _, m, v in rows if m == metric])
        assert sim == pytest.approx(chance(metric, 20), abs=0.02)


def test_ceiling_is_the_share_of_answers_inside_the_encoded_tokens():
    rows = pd.DataFrame({"backbone": "m", "task": "t", "length": [512] * 4 + [256] * 2,
                         "query_id": list("abcdef"), "answer_visible": [True, False, False, True, True, True],
                         "encoded_length": [254] * 6})
    c = ceiling_by_length(rows).set_index("length").ceiling
    assert c[512] == 0.5 and c[256] == 1.0
