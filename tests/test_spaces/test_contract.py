"""The knob contract, checked for every registered knob (a new knob gets these tests for free)."""

from __future__ import annotations

import dataclasses

import optuna
import pytest
import torch
from torch import nn

from tradeoff.spaces import (
    KNOBS,
    Applied,
    ApplyContext,
    KnobConfig,
    Plan,
    PlanError,
    apply_config,
    default_space,
    format_plan,
    knob_for,
    suggest_plan,
    validate_space,
)

NAMES = sorted(KNOBS)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    ).eval()


def ctx() -> ApplyContext:
    return ApplyContext(
        example_input=torch.randn(1, 3, 8, 8), num_classes=10, calibration=(torch.randn(8, 3, 8, 8),)
    )


@pytest.mark.parametrize("name", NAMES)
def test_the_config_is_frozen_versioned_data_registered_with_its_knob(name):
    knob = KNOBS[name]
    config = knob.make(knob.off)
    assert isinstance(config, KnobConfig) and dataclasses.is_dataclass(config)
    assert isinstance(type(config).VERSION, int) and type(config).VERSION >= 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.value = 0  # type: ignore[misc]
    assert knob_for(config) is knob
    assert config == knob.make(knob.off)  # data: equal when the settings are
    for option, spec in knob.options.items():
        assert option in config.options() and config.options()[option] in spec.choices
    with pytest.raises(PlanError, match="unknown option"):
        knob.make(knob.off, {"no_such_option": 1})


@pytest.mark.parametrize("name", NAMES)
def test_the_off_value_is_a_no_op(name):
    knob = KNOBS[name]
    model = small_net()
    x = torch.randn(2, 3, 8, 8)
    before = model(x)
    applied = apply_config(model, knob.make(knob.off), ctx())
    assert isinstance(applied, Applied)
    torch.testing.assert_close(applied.model.eval()(x), before)
    assert knob.is_off(knob.off) and Plan().to_dict()[name] == knob.off
    assert name not in Plan().active()


@pytest.mark.parametrize("name", NAMES)
def test_the_default_space_validates_and_its_probe_lies_within_limits(name):
    knob = KNOBS[name]
    spec = knob.validate(dict(knob.default_space))
    assert validate_space({name: knob.default_space})[name] == spec
    assert (name in default_space()) == knob.searched_by_default
    probe = knob.probe(spec)
    assert probe is not None and not knob.is_off(probe)
    knob.check_value(probe)
    lo, hi = knob.limits
    assert lo <= probe <= hi
    assert isinstance(knob.distribution(spec), optuna.distributions.BaseDistribution)


@pytest.mark.parametrize("name", NAMES)
def test_a_value_applies_and_the_model_still_answers(name):
    knob = KNOBS[name]
    value = knob.probe(knob.validate(dict(knob.default_space)))
    applied = apply_config(small_net(), knob.make(value), ctx())
    assert applied.model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    assert all(isinstance(s, str) and s.count(": ") >= 2 for s in applied.skipped)


@pytest.mark.parametrize("name", NAMES)
def test_a_plan_round_trips_through_trial_params(name):
    knob = KNOBS[name]
    space = validate_space({name: knob.default_space})  # a knob not searched by default, named
    value = knob.probe(space[name])
    plan = Plan(**{name: value})
    # as Optuna hands it back: suggested from the stored params
    again = suggest_plan(optuna.trial.FixedTrial(Plan(**{name: value}).params()), space)
    assert again == plan and again.to_dict() == plan.to_dict()
    assert Plan.from_params(plan.params()) == plan == Plan.from_params(plan.to_dict())
    assert format_plan(plan) == format_plan(plan.to_dict()) and name in format_plan(plan)


@pytest.mark.parametrize("name", NAMES)
def test_out_of_limits_and_mappings_are_refused_before_work(name):
    knob = KNOBS[name]
    lo, hi = knob.limits
    with pytest.raises(PlanError, match=name):
        knob.check(knob.make(hi + 1))
    mapping = knob.make({"0": knob.probe(knob.validate(dict(knob.default_space)))})
    if knob.per_layer:
        knob.check(mapping)
    else:
        with pytest.raises(PlanError, match="one value for the whole network"):
            knob.check(mapping)


def test_a_version_1_plan_still_loads():
    old = {"student_width": 0.5, "prune_ratio": 0.25, "rank_ratio": 1.0, "weight_bits": 8, "version": 1}
    plan = Plan.from_params(old)
    assert plan.student_width == 0.5 and plan.weight_bits == 8
    assert format_plan(old) == "student_width=0.5, prune_ratio=0.25, weight_bits=8"
    # a version-1 study kept pruning's mode in its configuration: it arrives as the study's option
    unstructured = Plan.from_params(old, options={"prune_ratio": {"mode": "unstructured"}})
    assert unstructured.config("prune_ratio").mode == "unstructured"
    assert unstructured.to_dict()["options"] == {"prune_ratio": {"mode": "unstructured"}}
