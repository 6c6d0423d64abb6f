"""The default sampler's history cap: TPE itself below the cap, the front and the recent trials
above it, the front kept exactly."""

from __future__ import annotations

import numpy as np
import optuna
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState

from tradeoff.search.study.sampler import CappedTPESampler, ParetoFront, make_sampler

DIRECTIONS = ["maximize", "minimize"]


def objective(trial: optuna.Trial) -> tuple[float, float]:
    x, y = trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)
    return x * (1 - 0.3 * y), x**2 + y


def run(sampler, n: int) -> optuna.Study:
    study = optuna.create_study(directions=DIRECTIONS, sampler=sampler)
    study.optimize(objective, n_trials=n)
    return study


def test_below_the_cap_it_proposes_what_tpe_proposes():
    capped = run(
        CappedTPESampler(multivariate=True, constant_liar=True, n_startup_trials=5, seed=3, cap=40), 30
    )
    plain = run(
        optuna.samplers.TPESampler(multivariate=True, constant_liar=True, n_startup_trials=5, seed=3), 30
    )
    assert [t.params for t in capped.trials] == [t.params for t in plain.trials]
    assert isinstance(make_sampler("auto", seed=0), CappedTPESampler)


def test_above_the_cap_tpe_reads_the_front_the_recent_trials_and_the_running_ones():
    sampler = CappedTPESampler(multivariate=True, constant_liar=True, n_startup_trials=5, seed=0, cap=20)
    study = run(sampler, 60)
    running = study.ask()
    trials = study.get_trials(deepcopy=False)
    seen = sampler.capped(study, trials)
    front = {t.number for t in study.best_trials}
    recent = {t.number for t in trials if t.state == TrialState.COMPLETE}
    recent = set(sorted(recent)[-20:])
    assert {t.number for t in seen} == front | recent | {running.number}
    assert len(seen) < len(trials)
    # and it still proposes: TPE fits on the capped trials
    x = running.suggest_float("x", 0, 1)
    assert 0 <= x <= 1


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=40),
    st.integers(1, 5),
)
def test_the_incremental_front_is_the_front(points, chunks):
    directions = ["maximize", "minimize", "minimize"]
    study = optuna.create_study(directions=directions)
    for p in points:
        study.add_trial(
            optuna.trial.create_trial(
                params={}, distributions={}, values=[float(v) for v in p], state=TrialState.COMPLETE
            )
        )
    trials = study.get_trials(deepcopy=False)
    front = ParetoFront()
    for part in np.array_split(np.arange(len(trials)), chunks):  # trials arrive in batches, some twice
        front.update(study.directions, [trials[i] for i in part] + trials[: int(part[0]) if len(part) else 0])
    expected = {t.number for t in study.best_trials}
    got = front.numbers()
    # Optuna keeps every trial of a tie; the incremental front keeps the first of equal points
    assert {tuple(trials[n].values) for n in got} == {tuple(trials[n].values) for n in expected}
    assert got <= expected
