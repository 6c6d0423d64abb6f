from __future__ import annotations

import optuna
import pytest
import torch

from tradeoff.search.errors import UsageError
from tradeoff.search.study.config import SearchConfig
from tradeoff.search.study.records import BASELINE_ATTR, CONFIG_ATTR, FAIL_ATTR
from tradeoff.search.study.sampler import START_FILL
from tradeoff.search.study.study import open_study
from tradeoff.search.trial.runner import Runner
from tradeoff.spaces import Plan
from tradeoff.storage import open_storage

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
def study_and_runner(storage_url, tiny_task, tiny_teacher):
    """A study on each storage (a real SQLite file, a fresh PostgreSQL database) and its runner."""
    return _study_and_runner(storage_url, tiny_task, tiny_teacher)


@pytest.fixture
def runner(tmp_path, tiny_task, tiny_teacher):
    """The runner alone (the tests that build models without touching a study)."""
    return _study_and_runner(f"sqlite:///{tmp_path / 'r.db'}", tiny_task, tiny_teacher)[1]


def _study_and_runner(url, tiny_task, tiny_teacher):
    storage = open_storage(url)
    given = {
        "model": "tiny_resnet",
        "finetune_steps": 30,
        "latency_repeats": 10,
        "sampler": "tpe",  # its start design: the baseline and the one single-technique plan, no more
        "constraints": {"max_size_mb": 100.0},
        "space": {  # prune only: the other knobs fixed at off
            "student_width": {"low": 1, "high": 1},
            "rank_ratio": {"low": 1, "high": 1},
            "weight_bits": {"choices": [32]},
        },
    }
    study, config, created = open_study(storage, "r", given, n_trials=8)
    assert created
    return study, Runner(config, tiny_task, tiny_teacher)


def test_baseline_then_pruned_trials_are_measured_and_recorded(study_and_runner):
    study, runner = study_and_runner
    study.optimize(runner, n_trials=2)  # the baseline, then the single-technique plan (p = 0.5)
    base, pruned = study.trials[:2]
    assert base.state == pruned.state == optuna.trial.TrialState.COMPLETE
    for t in (base, pruned):
        assert all(name in t.user_attrs for name in FIGURES)
        assert t.values == [t.user_attrs[n] for n in runner.config.objectives]
        assert t.constraints == pytest.approx({"max_size_mb": t.user_attrs["size_bytes"] - 100e6})
    assert base.params["prune_ratio"] == 0.0 and pruned.params["prune_ratio"] == 0.5
    assert study.user_attrs[BASELINE_ATTR]["trial"] == 0
    assert study.user_attrs[BASELINE_ATTR]["size_bytes"] == base.user_attrs["size_bytes"]
    # pruning half the channels of every coupled group leaves about a quarter of the weights
    assert 0.15 < pruned.user_attrs["params"] / base.user_attrs["params"] < 0.4
    assert pruned.user_attrs["flops"] < base.user_attrs["flops"]
    assert pruned.user_attrs["accuracy"] > 0.8  # fine-tuned against the teacher, not wrecked
    assert pruned.user_attrs["time_finetune_s"] > 0 and base.user_attrs["time_finetune_s"] == 0


def test_the_baseline_measures_the_teacher_itself(study_and_runner, tiny_task, tiny_teacher):
    from tradeoff.search.trial.measure import accuracy

    study, runner = study_and_runner
    study.optimize(runner, n_trials=1)
    expected = accuracy(tiny_teacher, tiny_task.val.x, tiny_task.val.y)
    assert study.trials[0].user_attrs["accuracy"] == pytest.approx(expected)


def test_a_plan_that_cannot_apply_fails_with_its_reason_and_the_study_goes_on(study_and_runner):
    study, runner = study_and_runner
    study.optimize(runner, n_trials=2)  # the seeded trials
    study.enqueue_trial({"prune_ratio": 0.99})  # beyond the knob's hard limit
    study.enqueue_trial({"prune_ratio": 0.25})
    study.optimize(runner, n_trials=2, catch=(Exception,))
    failed, ok = study.trials[2:]
    assert failed.state == optuna.trial.TrialState.FAIL
    assert "prune_ratio=0.99" in failed.user_attrs[FAIL_ATTR]
    assert ok.state == optuna.trial.TrialState.COMPLETE


def test_a_rebuilt_plan_gives_the_same_model(runner):
    import torch

    plan = Plan(prune_ratio=0.3)
    a, _ = runner.build(plan)
    b, _ = runner.build(Plan.from_params(plan.params()))
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


def test_a_plan_proposed_twice_reuses_the_measurement(study_and_runner):
    study, runner = study_and_runner
    study.optimize(runner, n_trials=2)  # the seeded trials
    study.enqueue_trial({"prune_ratio": 0.0})  # the baseline again
    study.optimize(runner, n_trials=1)
    first, twin = study.trials[0], study.trials[2]
    assert twin.user_attrs["duplicate_of"] == 0 and twin.values == first.values


def test_a_new_study_is_seeded_with_the_baseline_and_each_technique_alone(storage_url):
    storage = open_storage(storage_url)
    study, _, _ = open_study(storage, "seed", {"model": "tiny_resnet", "sampler": "tpe"}, n_trials=20)
    waiting = [t for t in study.trials if t.state == optuna.trial.TrialState.WAITING]
    assert [t.user_attrs["role"] for t in waiting] == ["baseline"] + ["single-technique"] * 4
    fixed = [{k: v for k, v in t.system_attrs["fixed_params"].items() if k != "allocation"} for t in waiting]
    active = [Plan.from_params(f).active() for f in fixed]
    assert active == [
        {},
        {"student_width": 0.5},
        {"prune_ratio": 0.5},
        {"rank_ratio": 0.25},
        {"weight_bits": 8},
    ]


@pytest.mark.parametrize(
    "sampler, n_probes, n_fill",
    [("auto", 0, START_FILL), ("gp", 0, START_FILL), ("nsga2", 4, 5), ("tpe", 4, 0), ("random", 4, 0)],
)
def test_the_start_design_is_filled_by_a_latin_hypercube(tmp_path, sampler, n_probes, n_fill):
    from tradeoff.spaces import KNOBS
    from tradeoff.spaces.quantization import bit_budgets

    storage = open_storage(f"sqlite:///{tmp_path / 'lhs.db'}")
    study, config, _ = open_study(storage, "lhs", {"model": "tiny_resnet", "sampler": sampler}, n_trials=40)
    assert config.population_size == 10 and config.sampler == sampler
    waiting = [t for t in study.trials if t.state == optuna.trial.TrialState.WAITING]
    fill = [t.system_attrs["fixed_params"] for t in waiting if t.user_attrs["role"] == "space-filling"]
    # NSGA-II: the first generation (population 10 for 40 trials) is the start design
    assert len(waiting) == 1 + n_probes + n_fill and len(fill) == n_fill
    assert sum(t.user_attrs["role"] == "single-technique" for t in waiting) == n_probes
    assert study.user_attrs["tradeoff:sampler"].startswith(f"sampler {sampler}:")
    if not n_fill:
        return
    assert len({tuple(sorted(p.items())) for p in fill}) == n_fill
    assert set(config.space) == {n for n in KNOBS if KNOBS[n].searched_by_default}
    for name, spec in config.space.items():
        values = [p[name] for p in fill]
        if "choices" in spec:
            # an allocated study (the default) searches average-bit budgets: its design covers them
            allowed = bit_budgets(spec["choices"]) if name == "weight_bits" else spec["choices"]
            assert set(values) <= set(allowed)
            if n_fill >= len(allowed):  # a Latin hypercube puts a point in every choice
                assert set(values) == set(allowed)
        else:
            assert all(spec["low"] <= v <= spec["high"] for v in values)
            # one point in each fifth of the range: a Latin hypercube, not clustered draws
            cells = {min(4, int((v - spec["low"]) / (spec["high"] - spec["low"]) * 5)) for v in values}
            assert len(cells) >= 4, (name, values)


def test_each_sampler_is_the_one_its_name_says(tmp_path):
    from optuna.samplers import GPSampler, NSGAIISampler, RandomSampler, TPESampler

    from tradeoff.search.study.sampler import CappedTPESampler
    from tradeoff.search.study.study import sampler_line, study_sampler

    # the default's TPE reads the front and the latest trials past 1,000 (test_sampler.py)
    expected = {"auto": CappedTPESampler, "tpe": CappedTPESampler, "nsga2": NSGAIISampler, "gp": GPSampler}
    expected["random"] = RandomSampler
    for name, cls in expected.items():
        for granularity, joint in (("global", True), ("allocated", False), ("layer", False)):
            config = SearchConfig(sampler=name, granularity=granularity).validated(n_trials=40)
            sampler = study_sampler(config)
            assert type(sampler) is cls, name
            if issubclass(cls, TPESampler):
                # one joint density over a global study's knobs, one per knob where the allocation
                # sets them layer by layer; the constant liar for workers either way
                assert sampler._multivariate is joint and sampler._constant_liar, (name, granularity)
                assert config.tpe_density == ("joint" if joint else "independent")
                # the sampler line printed and stored with the study says which
                assert ("multivariate TPE" if joint else "one density per knob") in sampler_line(config)
    with pytest.raises(UsageError, match="--sampler 'cmaes'"):
        SearchConfig(sampler="cmaes").validated()


def test_a_study_made_before_tpe_density_resumes_on_the_joint_density():
    import json

    from tradeoff.search.study.study import study_sampler

    stored = json.loads(SearchConfig().validated(n_trials=40).to_json())
    assert stored["tpe_density"] == "independent" and stored["granularity"] == "allocated"
    stored["version"] = 7
    del stored["tpe_density"]
    old = SearchConfig.from_json(json.dumps(stored))
    assert old.tpe_density == "joint" and study_sampler(old.validated())._multivariate
    with pytest.raises(UsageError, match="tpe_density"):
        SearchConfig(tpe_density="diagonal").validated()


def test_a_study_made_before_the_sampler_policy_resumes_on_nsga2():
    import json

    stored = json.loads(SearchConfig().validated(n_trials=40).to_json())
    stored["version"] = 2
    del stored["sampler"]
    assert SearchConfig.from_json(json.dumps(stored)).sampler == "nsga2"


def test_nsga2_draws_again_a_child_that_repeats_a_measured_plan():
    from tradeoff.search.study.sampler import NoRepeats

    draws = iter([{"a": 1.0}, {"a": 1.0}, {"a": 2.0}])
    calls = []

    def inner(study, space, parents):
        calls.append(1)
        return next(draws)

    study = optuna.create_study()
    study.enqueue_trial({"a": 1.0})
    study.optimize(lambda t: t.suggest_float("a", 0, 3), n_trials=1)
    assert NoRepeats(inner)(study, {}, []) == {"a": 2.0} and len(calls) == 3


def test_config_is_stored_in_the_study(study_and_runner):
    study, runner = study_and_runner
    assert SearchConfig.from_json(study.user_attrs[CONFIG_ATTR]) == runner.config
    assert study.metric_names == list(runner.config.objectives)


def test_unstructured_pruning_counts_non_zeros_and_a_sparse_size(tiny_task, tiny_teacher):
    config = SearchConfig(
        model="tiny_resnet",
        knob_options={"prune_ratio": {"mode": "unstructured"}},
        finetune_steps=10,
        latency_repeats=5,
    ).validated(n_trials=4)
    runner = Runner(config, tiny_task, tiny_teacher)
    base = runner.measure(runner.build(Plan())[0])
    plan = runner.plan_of({"prune_ratio": 0.8})  # the study's option: unstructured
    assert plan.config("prune_ratio").mode == "unstructured"
    compressed, _ = runner.build(plan)
    sparse = runner.measure(compressed)
    assert compressed.sparse and "bitmap" in sparse.size_method
    assert sparse.params < 0.35 * base.params  # 80% of conv weights are zero; BN and fc stay dense
    assert sparse.size_bytes < 0.45 * base.size_bytes
    # the fine-tune kept the zeros (the mask held through training): 80% over all convs
    convs = [m.weight for m in compressed.model.modules() if isinstance(m, torch.nn.Conv2d)]
    zeros = sum(int((w == 0).sum()) for w in convs)
    assert zeros / sum(w.numel() for w in convs) == pytest.approx(0.8, abs=0.01)


def test_four_knobs_together_on_the_bundled_task(runner):
    compressed, times = runner.build(Plan(student_width=0.5, prune_ratio=0.25, rank_ratio=0.5, weight_bits=8))
    m = runner.measure(compressed)
    base = runner.measure(runner.build(Plan())[0])
    assert m.weight_bits == 8 and "int8 kernels" in m.latency_method
    assert m.size_bytes < base.size_bytes / 8
    assert m.accuracy > 0.8
    assert times["finetune_s"] > 0
