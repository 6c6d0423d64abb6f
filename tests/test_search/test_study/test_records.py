"""`search.study.records`: reading a trial's constraints, whatever form stored them."""

from __future__ import annotations

import math

import optuna
import pytest

from tradeoff.search.study.records import broken_constraints, constraints_of, feasible


def _trial(system_attrs: dict) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(values=[1.0], system_attrs=system_attrs)


@pytest.mark.parametrize(
    "system_attrs, named, ok",
    [
        ({}, {}, True),
        ({"constraints:max_size_mb": -3.0}, {"max_size_mb": -3.0}, True),
        ({"constraints:max_size_mb": 0.0, "constraints:min_accuracy": 0.01}, None, False),
        ({"constraints": [-1.0, 2.0]}, {"0": -1.0, "1": 2.0}, False),  # Optuna's pre-5 list form
        ({"constraints": [-1.0, -2.0]}, {"0": -1.0, "1": -2.0}, True),
    ],
)
def test_constraints_read_from_either_stored_form(system_attrs, named, ok):
    t = _trial(system_attrs)
    if named is not None:
        assert constraints_of(t) == named
    assert feasible(t) is ok
    assert (broken_constraints(t) == []) is ok


def test_a_plain_sequence_or_mapping_reads_too():
    assert constraints_of([0.5, -1]) == {"0": 0.5, "1": -1.0}
    assert broken_constraints({"a": -1, "b": 0.0, "c": 1e-9}) == ["c"]
    assert not feasible({"a": math.nan})  # NaN never counts as met
    assert feasible(None) and feasible(())
