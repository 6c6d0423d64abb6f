"""The weighted cost and `select`, on a hand-made set of trials with hand-computed answers."""

from __future__ import annotations

import optuna
import pytest

from tradeoff.search.errors import UsageError
from tradeoff.search.views.cost import NoFeasibleTrial, cost, pareto, parse_weights, rank, terms

OBJ = ("accuracy", "size_bytes", "latency_ms", "energy_mj")
BASE = {"accuracy": 0.90, "size_bytes": 1000.0, "latency_ms": 10.0, "energy_mj": 2.0}


def trial(number, acc, size, lat, energy, *, duplicate_of=None, state=optuna.trial.TrialState.COMPLETE):
    attrs = {"accuracy": acc, "size_bytes": size, "latency_ms": lat, "energy_mj": energy, "plan": {}}
    if duplicate_of is not None:
        attrs["duplicate_of"] = duplicate_of
    t = optuna.trial.create_trial(
        state=state,
        values=[acc, size, lat, energy] if state == optuna.trial.TrialState.COMPLETE else None,
        user_attrs=attrs,
    )
    t.number = number
    return t


# #0 the baseline; #1 small but inaccurate; #2 balanced; #3 fast and accurate but big;
# #4 dominated by #2 (worse on every figure); #5 a re-proposal of #2; #6 failed.
TRIALS = [
    trial(0, 0.90, 1000, 10.0, 2.0),
    trial(1, 0.80, 50, 4.0, 0.2),
    trial(2, 0.89, 200, 5.0, 0.5),
    trial(3, 0.91, 800, 2.0, 1.5),
    trial(4, 0.88, 300, 6.0, 0.6),
    trial(5, 0.89, 200, 5.0, 0.5, duplicate_of=2),
    trial(6, 0.0, 0, 0, 0, state=optuna.trial.TrialState.FAIL),
]


def ranked_numbers(weights, **constraints):
    return [r.trial.number for r in rank(TRIALS, BASE, weights, objectives=OBJ, constraints=constraints)]


def test_terms_are_points_of_drop_and_ratios():
    t = terms(TRIALS[2].user_attrs, BASE, {"accuracy": 1, "size": 1, "latency": 1, "energy": 1})
    assert t["accuracy"] == pytest.approx(1.0)  # 90 % -> 89 %: one point
    assert t["size"] == pytest.approx(0.2) and t["latency"] == pytest.approx(0.5)
    assert t["energy"] == pytest.approx(0.25)
    # 0.6*1 + 0.2*0.2 + 0.1*0.5 + 0.1*0.25 = 0.715
    assert cost(TRIALS[2].user_attrs, BASE, parse_weights(None)) == pytest.approx(0.715)


def test_pareto_drops_the_dominated_trial():
    # #3 beats the baseline #0 on every figure; #2 beats #4 on every figure
    assert sorted(t.number for t in pareto(TRIALS[:5], OBJ)) == [1, 2, 3]


@pytest.mark.parametrize(
    ("weights", "constraints", "expected"),
    [
        # the front is #1, #2, #3. Default weights: #3 -0.6+0.16+0.02+0.075 = -0.345,
        # #2 0.6+0.04+0.05+0.025 = 0.715, #1 6+0.01+0.04+0.01 = 6.06
        ("accuracy=0.6,size=0.2,latency=0.1,energy=0.1", {}, [3, 2, 1]),
        # size alone: #1 0.05 < #2 0.2 < #3 0.8
        ("size=1", {}, [1, 2, 3]),
        # accuracy alone: #3 -1 < #2 1 < #1 10
        ("accuracy=1", {}, [3, 2, 1]),
        # latency=1,size=1: #1 0.45, #2 0.7, #3 1.0
        ("latency=1,size=1", {}, [1, 2, 3]),
        # accuracy at least 88 % leaves #0, #2, #3, #4 (#0 and #4 dominated); by size #2 first
        ("size=1", {"min_accuracy": 0.88}, [2, 3]),
        # at most 0.5 kB and 8 ms: #1, #2, #4; #4 dominated; accuracy ranks #2 before #1
        ("accuracy=1", {"max_size_mb": 0.0005, "max_latency_ms": 8}, [2, 1]),
        # energy <= 1 mJ and accuracy >= 85 %: #2 and #4, and #2 dominates #4
        ("accuracy=1,energy=1", {"max_energy_mj": 1.0, "min_accuracy": 0.85}, [2]),
        # a dominated trial becomes a candidate when what dominates it is infeasible: with
        # latency <= 5 ms and accuracy >= 89 %, #0 and #4 are out, #2 and #3 remain
        ("energy=1", {"max_latency_ms": 5, "min_accuracy": 0.89}, [2, 3]),
    ],
)
def test_rank_matches_hand_computation(weights, constraints, expected):
    assert ranked_numbers(parse_weights(weights), **constraints) == expected


def test_nothing_feasible_names_the_nearest_trials():
    with pytest.raises(NoFeasibleTrial) as e:
        rank(TRIALS, BASE, parse_weights(None), objectives=OBJ, constraints={"max_latency_ms": 1.0})
    msg = str(e.value)
    assert msg.startswith("no trial meets the constraints; nearest: #3 misses latency 2 ms > 1 ms")
    assert "\n" not in msg
    assert [t.number for t, _ in e.value.nearest] == [3, 1, 2]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("speed=1", "unknown weight 'speed'"),
        ("accuracy=-0.5", "must be a finite number >= 0"),
        ("accuracy=x", "is not a number"),
        ("accuracy", "is not NAME=NUMBER"),
        ("accuracy=0,size=0", "every weight is 0"),
        ("size=1,size=2", "given twice"),
    ],
)
def test_bad_weights(text, message):
    with pytest.raises(UsageError, match=message):
        parse_weights(text)


@pytest.mark.parametrize("constraints", [{"min_accuracy": 1.5}, {"max_latency_ms": -1}, {"max_speed": 1}])
def test_bad_constraints(constraints):
    with pytest.raises(UsageError):
        rank(TRIALS, BASE, parse_weights(None), objectives=OBJ, constraints=constraints)
