"""The figure registry: one declaration per figure, read by every part that names figures."""

from __future__ import annotations

import json

import optuna
import pytest
from conftest import QUICKER

from tradeoff.search.errors import UsageError
from tradeoff.search.study.config import SearchConfig
from tradeoff.search.trial.figures import FIGURES, Figure, by_constraint, by_weight, register_figure
from tradeoff.search.trial.measure import Measurement
from tradeoff.search.views.cost import check_constraints, constraint_values, parse_weights, terms
from tradeoff.search.views.export import tolerances

NAMES = list(FIGURES)


def test_the_registry_holds_the_figures_and_each_name_once():
    assert {
        "accuracy",
        "params",
        "flops",
        "size_bytes",
        "latency_ms",
        "energy_mj",
        "peak_memory_bytes",
    } <= set(FIGURES)
    assert len(by_weight()) == len(by_constraint()) == len(FIGURES)
    with pytest.raises(ValueError, match="already registered"):
        register_figure(FIGURES["size_bytes"])


@pytest.mark.parametrize("name", NAMES)
def test_every_figure_is_an_objective_a_constraint_and_a_cost_weight(name):
    figure = FIGURES[name]
    config = SearchConfig(objectives=("accuracy", name) if name != "accuracy" else ("accuracy",))
    checked = config.validated(n_trials=8)
    assert checked.directions[-1] == figure.direction
    bound = 0.5 if figure.unit == "fraction" else 2.0
    assert check_constraints({figure.constraint: bound}) == {figure.constraint: bound}
    assert figure.flag.startswith("--max-" if figure.direction == "minimize" else "--min-")
    assert parse_weights(f"{figure.weight}=1") == {figure.weight: 1.0}
    assert figure.tolerance.text and tolerances()[name] == figure.tolerance.text
    assert figure.text(1.0) and figure.label
    # a constraint value is <= 0 exactly when the figure meets the bound
    good, bad = (
        bound * figure.constraint_scale * s
        for s in ((0.5, 2.0) if figure.direction == "minimize" else (2.0, 0.5))
    )
    assert constraint_values({name: good}, {figure.constraint: bound})[figure.constraint] <= 0
    assert constraint_values({name: bad}, {figure.constraint: bound})[figure.constraint] > 0


def test_memory_is_weighed_against_the_baseline_like_size():
    base = {"accuracy": 0.9, "peak_memory_bytes": 4e6}
    assert terms({"accuracy": 0.85, "peak_memory_bytes": 1e6}, base, {"accuracy": 1, "memory": 1}) == {
        "accuracy": pytest.approx(5.0),
        "memory": 0.25,
    }


def test_a_figure_is_declared_completely_or_refused():
    with pytest.raises(ValueError, match="direction"):
        Figure("x", "bytes", "smaller", "x", "x", lambda p: (0, {}), "", "x", "max_x")
    with pytest.raises(ValueError, match="starts max_"):
        Figure("x", "bytes", "minimize", "x", "x", lambda p: (0, {}), "", "x", "min_x")
    with pytest.raises(ValueError, match="needs"):
        register_figure(
            Figure("x", "bytes", "minimize", "x", "x", lambda p: (0, {}), "", "xw", "max_x", needs=("nope",))
        )
    assert "x" not in FIGURES


def test_unknown_names_are_one_line_errors():
    with pytest.raises(UsageError, match="unknown constraint 'max_speed'"):
        check_constraints({"max_speed": 1})
    with pytest.raises(UsageError, match="impossible constraint --max-memory-mb"):
        check_constraints({"max_memory_mb": 0})
    with pytest.raises(UsageError, match="unknown weight 'speed'"):
        parse_weights("speed=1")


def test_peak_memory_as_objective_constraint_and_cost_weight_from_the_command_line(tmp_path, cli):
    # tiny_resnet holds 1.2 MB of float weights: 1 MB leaves the baseline out, int8 and students in
    r = cli(
        "search",
        "--n-trials",
        "3",
        *QUICKER,
        "--objectives",
        "accuracy,peak_memory_bytes",
        "--max-memory-mb",
        "1.0",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="tradeoff", storage=f"sqlite:///{tmp_path / 'tradeoff.db'}")
    assert study.metric_names == ["accuracy", "peak_memory_bytes"]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    for t in done:
        assert t.values == [t.user_attrs["accuracy"], t.user_attrs["peak_memory_bytes"]]
        assert t.constraints == pytest.approx({"max_memory_mb": t.user_attrs["peak_memory_bytes"] - 1e6})
        assert t.user_attrs["memory_method"].startswith("weights as held in memory")
    assert done[0].user_attrs["peak_memory_bytes"] > 1e6  # the float baseline breaks it
    sel = cli("select", "--weights", "accuracy=0.5,memory=0.5", "--max-memory-mb", "5", cwd=tmp_path)
    assert sel.returncode == 0, sel.stderr
    assert "memory (x base)" in sel.stdout.splitlines()[0]
    chosen = int(sel.stdout.splitlines()[1].split()[1][1:])
    assert study.trials[chosen].user_attrs["peak_memory_bytes"] <= 1e6  # the study's bound still holds
    front = cli("front", cwd=tmp_path)
    assert "peak_memory_bytes" in front.stdout.splitlines()[0]
    stored = json.loads(study.user_attrs["tradeoff:config"])
    assert stored["constraints"] == {"max_memory_mb": 1.0}


def test_a_measurement_round_trips_with_every_figure():
    figures = {name: 1 for name in FIGURES}
    details = {d: "x" for f in FIGURES.values() for d in f.details} | {"weight_bits": 32}
    m = Measurement(figures=figures, details=details)
    assert Measurement.from_dict(m.to_dict()) == m and m.peak_memory_bytes == 1
