from __future__ import annotations

import pytest

from tradeoff.search.errors import UsageError
from tradeoff.search.study.config import SearchConfig, fitted_population


def test_defaults_validate_and_round_trip_through_json():
    from tradeoff.search.trial.measure.energy import has_energy_counter

    c = SearchConfig().validated(n_trials=40)
    energy = ("energy_mj",) if has_energy_counter("cpu") else ()  # an objective where a counter reads it
    assert c.objectives == ("accuracy", "size_bytes", "latency_ms", *energy)
    assert c.directions == ["maximize", "minimize", "minimize", *(["minimize"] if energy else [])]
    assert c.runtime == "onnxruntime"
    assert c.population_size == fitted_population(40) == 10
    assert "prune_ratio" in c.space
    assert SearchConfig.from_json(c.to_json()) == c


@pytest.mark.parametrize("n, pop", [(1, 4), (16, 4), (40, 10), (100, 25), (1000, 50)])
def test_population_is_fitted_to_the_budget(n, pop):
    assert fitted_population(n) == pop


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"objectives": ("accuracy", "speed")}, "unknown objective 'speed'"),
        ({"runtime": "tensorrt"}, "--runtime 'tensorrt'"),
        ({"runtime": "onnxruntime", "target": "cuda"}, "a cuda target is measured in torchscript"),
        ({"constraints": {"min_accuracy": 1.5}}, "impossible constraint --min-accuracy"),
        ({"constraints": {"max_size_mb": -1}}, "impossible constraint --max-size-mb"),
        ({"constraints": {"max_latency_ms": 0}}, "impossible constraint --max-latency-ms"),
        ({"constraints": {"max_speed": 3}}, "unknown constraint"),
        ({"space": {"prune_ratio": {"low": 0.5, "high": 2}}}, "search space: `prune_ratio`"),
        ({"target": "tpu"}, "unknown measurement target"),
        ({"latency_repeats": 1}, "latency_repeats"),
        ({"population_size": 1}, "population_size"),
        ({"granularity": "neuron"}, "--granularity 'neuron'"),
    ],
)
def test_bad_configurations_name_the_field(kwargs, message):
    with pytest.raises(UsageError, match=message):
        SearchConfig(**kwargs).validated(n_trials=10)


def test_constraint_values_follow_optunas_sign_convention():
    c = SearchConfig(constraints={"max_size_mb": 2, "min_accuracy": 0.9, "max_latency_ms": 1}).validated()
    figures = {"size_bytes": 1_500_000, "accuracy": 0.95, "latency_ms": 1.5}
    assert c.constraint_values(figures) == pytest.approx(
        {"max_latency_ms": 0.5, "max_size_mb": -500_000, "min_accuracy": -0.05}
    )


def test_differences_name_only_what_was_given_and_differs():
    stored = SearchConfig(constraints={"max_latency_ms": 2.0}).validated(n_trials=20)
    assert stored.differences({"model": "resnet18", "constraints": {"max_latency_ms": 2.0}}) == []
    diff = stored.differences({"model": "tiny_resnet", "constraints": {"min_accuracy": 0.9}})
    assert len(diff) == 2 and diff[0].startswith("model") and diff[1].startswith("constraints")


def test_a_study_made_before_runtimes_resumes_in_torchscript():
    import json

    data = json.loads(SearchConfig().validated().to_json())
    data["version"] = 3
    data.pop("runtime")
    assert SearchConfig.from_json(json.dumps(data)).runtime == "torchscript"
    assert SearchConfig(target="cuda").validated().runtime == "torchscript"


def test_a_study_made_before_per_layer_plans_resumes_with_one_value_per_knob():
    import json

    assert SearchConfig().validated().granularity == "allocated"
    data = json.loads(SearchConfig().validated().to_json())
    data["version"] = 5
    data.pop("granularity")
    assert SearchConfig.from_json(json.dumps(data)).granularity == "global"


def test_a_study_stored_with_keep_weights_resumes_with_the_same_kept_models():
    import json

    data = json.loads(SearchConfig(keep_models="none").validated().to_json())
    data["keep_weights"] = data.pop("keep_models")  # as a study made before 2026-12 stored it
    assert SearchConfig.from_json(json.dumps(data)).keep_models == "none"
