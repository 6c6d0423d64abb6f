from __future__ import annotations

import optuna
import pytest

from search.config import SearchConfig
from search.runner import BASELINE_ATTR, FAIL_ATTR, Runner
from search.study import CONFIG_ATTR, open_study
from spaces import Plan
from storage import open_storage

FIGURES = (
    "accuracy",
    "params",
    "flops",
    "size_bytes",
    "latency_ms",
    "latency_p10_ms",
    "latency_p90_ms",
    "latency_threads",
    "energy_mj",
    "energy_method",
    "latency_method",
)


@pytest.fixture
def study_and_runner(tmp_path, tiny_task, tiny_teacher):
    storage = open_storage(f"sqlite:///{tmp_path / 'r.db'}")
    given = {
        "model": "tiny_resnet",
        "finetune_steps": 30,
        "latency_repeats": 10,
        "constraints": {"max_size_mb": 100.0},
    }
    study, config, created = open_study(storage, "r", given, n_trials=8)
    assert created
    return study, Runner(config, tiny_task, tiny_teacher)


def test_baseline_then_pruned_trials_are_measured_and_recorded(study_and_runner):
    study, runner = study_and_runner
    study.enqueue_trial({"prune_ratio": 0.5})
    study.optimize(runner, n_trials=2)
    base, pruned = study.trials
    assert base.state == pruned.state == optuna.trial.TrialState.COMPLETE
    for t in (base, pruned):
        assert all(name in t.user_attrs for name in FIGURES)
        assert t.values == [t.user_attrs[n] for n in runner.config.objectives]
        assert t.constraints == pytest.approx({"max_size_mb": t.user_attrs["size_bytes"] - 100e6})
    assert base.params == {"prune_ratio": 0.0}
    assert study.user_attrs[BASELINE_ATTR]["trial"] == 0
    assert study.user_attrs[BASELINE_ATTR]["size_bytes"] == base.user_attrs["size_bytes"]
    # pruning half the channels of every coupled group leaves about a quarter of the weights
    assert 0.15 < pruned.user_attrs["params"] / base.user_attrs["params"] < 0.4
    assert pruned.user_attrs["flops"] < base.user_attrs["flops"]
    assert pruned.user_attrs["accuracy"] > 0.8  # fine-tuned against the teacher, not wrecked
    assert pruned.user_attrs["time_finetune_s"] > 0 and base.user_attrs["time_finetune_s"] == 0


def test_the_baseline_measures_the_teacher_itself(study_and_runner, tiny_task, tiny_teacher):
    from search.measure import accuracy

    study, runner = study_and_runner
    study.optimize(runner, n_trials=1)
    expected = accuracy(tiny_teacher, tiny_task.val.x, tiny_task.val.y)
    assert study.trials[0].user_attrs["accuracy"] == pytest.approx(expected)


def test_a_plan_that_cannot_apply_fails_with_its_reason_and_the_study_goes_on(study_and_runner):
    study, runner = study_and_runner
    study.enqueue_trial({"prune_ratio": 0.99})  # beyond the knob's hard limit
    study.enqueue_trial({"prune_ratio": 0.25})
    study.optimize(runner, n_trials=3, catch=(Exception,))
    _, failed, ok = study.trials
    assert failed.state == optuna.trial.TrialState.FAIL
    assert "prune_ratio=0.99" in failed.user_attrs[FAIL_ATTR]
    assert ok.state == optuna.trial.TrialState.COMPLETE


def test_a_rebuilt_plan_gives_the_same_model(study_and_runner):
    import torch

    study, runner = study_and_runner
    plan = Plan(prune_ratio=0.3)
    a, _, _ = runner.build(plan)
    b, _, _ = runner.build(Plan.from_params(plan.params()))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


def test_a_plan_proposed_twice_reuses_the_measurement(study_and_runner):
    study, runner = study_and_runner
    study.enqueue_trial({"prune_ratio": 0.0})  # the baseline again
    study.optimize(runner, n_trials=2)
    first, twin = study.trials
    assert twin.user_attrs["duplicate_of"] == 0 and twin.values == first.values


def test_config_is_stored_in_the_study(study_and_runner):
    study, runner = study_and_runner
    assert SearchConfig.from_json(study.user_attrs[CONFIG_ATTR]) == runner.config
    assert study.metric_names == list(runner.config.objectives)
