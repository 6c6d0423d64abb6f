"""The profile of the space before any fine-tune: the smallest, middle and largest plans of the
untrained network, the share of a sample meeting each bound, and a bound no plan can meet
refused before anything is stored or trained."""

from __future__ import annotations

import optuna
import pytest
from conftest import run_tradeoff

import tradeoff.search.task.teacher as teacher
from tradeoff.search import commands
from tradeoff.search.errors import UsageError
from tradeoff.search.study.profile import profile_plans, values_of
from tradeoff.search.trial.runner import Runner

SPACE = {
    "student_width": {"low": 0.25, "high": 1.0, "step": 0.125},
    "prune_ratio": {"low": 0.0, "high": 0.8, "step": 0.05},
    "rank_ratio": {"low": 0.1, "high": 1.0, "step": 0.05},
    "weight_bits": {"choices": [32, 8, 4, 2]},
}


def test_the_smallest_middle_and_largest_plans_of_a_space():
    plans = dict(profile_plans(SPACE))
    assert plans["smallest"] == {
        "student_width": 0.25,
        "prune_ratio": 0.8,
        "rank_ratio": 0.1,
        "weight_bits": 2,
    }
    assert plans["middle"] == {
        "student_width": 0.625,
        "prune_ratio": 0.4,
        "rank_ratio": 0.55,
        "weight_bits": 8,
    }
    assert plans["largest"] == {
        "student_width": 1.0,
        "prune_ratio": 0.0,
        "rank_ratio": 1.0,
        "weight_bits": 32,
    }
    assert values_of({"low": 0.2, "high": 0.6}) == [0.2, 0.4, 0.6]  # no step: the ends and the middle


@pytest.mark.parametrize(
    ("constraints", "goals", "message"),
    [
        (
            {"max_size_mb": 0.001},
            {},
            "no plan of the search space can meet --max-size-mb 0.001: its smallest plan",
        ),
        ({}, {"max_params": "/1000"}, "no plan of the search space can meet --max-params /1000 ("),
    ],
)
def test_a_bound_no_plan_can_meet_is_one_line_before_anything_is_stored_or_trained(
    tmp_path, monkeypatch, constraints, goals, message
):
    def never(*_args, **_kwargs):
        raise AssertionError("something was trained")

    monkeypatch.setattr(teacher, "train_classifier", never)
    monkeypatch.setattr(Runner, "_finetune", never)
    url = f"sqlite:///{tmp_path / 's.db'}"
    given = {"model": "tiny_resnet", "space": {"student_width": {"low": 0.5, "high": 1}}}
    with pytest.raises(UsageError, match=message.replace("(", r"\(")) as e:
        commands.run_trials(
            "search",
            url=url,
            study_name="s",
            given={**given, "constraints": constraints, "goals": goals},
            n_trials=3,
            artifacts=str(tmp_path / "artifacts"),
            log=lambda _m: None,
        )
    assert "student_width=0.05:0.5" in str(e.value)  # the knob whose range stops short of its limit
    assert "\n" not in str(e.value)
    assert optuna.get_all_study_names(url) == []


def test_tradeoff_profile_prints_the_space_and_the_share_of_a_sample_meeting_each_bound(tmp_path):
    r = run_tradeoff(
        "profile", "--model", "tiny_resnet", "--sample", "3", "--max-size-mb", "0.5", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert (
        "profile of the space" in r.stderr
        and "smallest" in r.stderr
        and "baseline (no compression)" in r.stderr
    )
    assert "of 3 sampled plans meet --max-size-mb 0.5 MB" in r.stderr
    assert not (tmp_path / "tradeoff.db").exists()  # nothing stored
    r = run_tradeoff(
        "profile", "--model", "tiny_resnet", "--sample", "0", "--max-size-mb", "0.001", cwd=tmp_path
    )
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("tradeoff: error: no plan of")
