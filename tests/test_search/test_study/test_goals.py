"""Constraints relative to the baseline: the forms, their resolution, and the one-line errors."""

from __future__ import annotations

import pytest

from tradeoff.search.errors import UsageError
from tradeoff.search.study.config import SearchConfig
from tradeoff.search.study.goals import check_goal, constraints_text, given_text, resolve, resolve_all

BASELINE = {"size_bytes": 1_260_000.0, "latency_ms": 0.8, "accuracy": 0.95, "params": 300_000.0}


@pytest.mark.parametrize(
    ("name", "given", "form", "bound"),
    [
        ("max_size_mb", "/10", "/10", 0.126),  # MB: the baseline's 1.26 MB divided by 10
        ("max_size_mb", " 25% ", "25%", 0.315),
        ("max_latency_ms", "50%", "50%", 0.4),
        ("max_params", "/4", "/4", 75_000),
        ("min_accuracy", "drop 1", "drop 1", 0.94),  # --max-accuracy-drop 1: one point
        ("min_accuracy", "drop 0.5", "drop 0.5", 0.945),
    ],
)
def test_each_relative_form_resolves_against_the_baseline(name, given, form, bound):
    assert check_goal(name, given) == form
    assert resolve(name, form, BASELINE) == pytest.approx(bound)


@pytest.mark.parametrize(
    ("name", "given", "message"),
    [
        ("max_size_mb", "/0", "a number > 0"),
        ("max_size_mb", "-5%", "must be > 0"),
        ("max_size_mb", "/ten", "'ten' is not a number"),
        ("max_size_mb", "x10", "give a number, a percentage of the baseline (50%) or a factor (/10)"),
        ("min_accuracy", "90%", "relative to the baseline, give --max-accuracy-drop POINTS"),
        ("min_accuracy", "drop 150", "give 0 to 100 points"),
        ("max_size_mb", "drop 1", "a drop in points is for accuracy only"),
    ],
)
def test_a_bad_relative_form_is_one_line_naming_the_flag(name, given, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_goal(name, given)


def test_the_form_given_is_stored_and_shown_beside_its_bound():
    config = SearchConfig(goals={"max_size_mb": "/10", "min_accuracy": "drop 1"}).validated()
    assert config.goals == {"max_size_mb": "/10", "min_accuracy": "drop 1"}
    assert SearchConfig.from_json(config.to_json()).goals == config.goals
    resolved = resolve_all(config.goals, BASELINE)
    assert resolved["max_size_mb"] == {"given": "/10", "bound": pytest.approx(0.126), "baseline": 1_260_000.0}
    bounds = {n: g["bound"] for n, g in resolved.items()}
    text = constraints_text(bounds, config.goals)
    assert text == "--max-size-mb /10 (0.126 MB), --max-accuracy-drop 1 (94.00%)", text
    assert "the baseline is not measured yet" in constraints_text({}, config.goals)
    assert given_text("max_latency_ms", "50%") == "--max-latency-ms 50%"


def test_a_figure_bounded_twice_is_refused():
    with pytest.raises(UsageError, match="give one bound per figure"):
        SearchConfig(constraints={"max_size_mb": 1.0}, goals={"max_size_mb": "/10"}).validated()
