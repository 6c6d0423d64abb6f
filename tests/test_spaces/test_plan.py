from __future__ import annotations

import optuna
import pytest
import torch

from tradeoff.spaces import (
    KNOBS,
    ApplyContext,
    Plan,
    PlanError,
    SpaceError,
    apply_plan,
    default_space,
    suggest_plan,
    validate_space,
)


def test_every_knob_has_a_plan_field_and_an_off_value_that_is_the_default():
    fields = Plan().to_dict()
    for name, knob in KNOBS.items():
        assert name in fields
        assert fields[name] == knob.off


def test_round_trip_through_params_and_dict():
    plan = Plan(student_width=0.75, prune_ratio=0.35, rank_ratio=0.5, weight_bits=4)
    assert Plan.from_params(plan.params()) == plan
    assert Plan.from_params(plan.to_dict()) == plan
    assert Plan.from_params({}) == Plan()  # an older/narrower plan: missing knobs are off


def test_from_params_rejects_unknown_fields_and_newer_versions():
    with pytest.raises(PlanError, match="unknown plan field"):
        Plan.from_params({"prune_ratio": 0.1, "sparkle": 1})
    with pytest.raises(PlanError, match="newer"):
        Plan.from_params({"prune_ratio": 0.1, "version": 999})


def test_suggest_plan_reads_the_trial():
    space = validate_space(None)
    params = {"student_width": 0.5, "prune_ratio": 0.4, "rank_ratio": 0.3, "weight_bits": 8}
    plan = suggest_plan(optuna.trial.FixedTrial(params), space)
    assert plan == Plan(**params)


def test_a_fixed_knob_is_suggested_as_that_value():
    study = optuna.create_study()
    space = validate_space({"prune_ratio": {"low": 0.3, "high": 0.3}, "weight_bits": {"choices": [8]}})
    plan = suggest_plan(study.ask(), space)
    assert plan.prune_ratio == 0.3 and plan.weight_bits == 8


@pytest.mark.parametrize(
    "space, message",
    [
        ({"prune_ratio": {"low": -0.1, "high": 0.5}}, "prune_ratio"),
        ({"prune_ratio": {"low": 0.2, "high": 1.0}}, "prune_ratio"),
        ({"prune_ratio": {"low": 0.6, "high": 0.2}}, "prune_ratio"),
        ({"prune_ratio": {"low": 0.0, "high": 0.5, "step": 0.3}}, "multiple of step"),
        ({"prune_ratio": {"choices": [0.1, 2.0]}}, "outside"),
        ({"width": {"low": 0.1, "high": 0.5}}, "unknown knob"),
    ],
)
def test_bad_spaces_are_refused_before_any_trial(space, message):
    with pytest.raises(SpaceError, match=message):
        validate_space(space)


def test_default_space_is_valid():
    assert validate_space(default_space()) == validate_space(None)


def test_a_value_outside_the_limits_is_rejected_before_work():
    ctx = ApplyContext(example_input=torch.randn(1, 3, 8, 8), num_classes=10)
    with pytest.raises(PlanError, match="prune_ratio"):
        apply_plan(torch.nn.Linear(3, 10), Plan(prune_ratio=0.99), ctx)
