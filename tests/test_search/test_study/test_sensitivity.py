"""The study's sensitivity table and allocated plans through the service: measured once, kept in
the artifact store (SHA-256 checked), reused on resume, printed, drawn, exported from."""

from __future__ import annotations

import json

import optuna
import pytest

import tradeoff.search.study.sensitivity as sensitivity_module
from tradeoff.search import commands
from tradeoff.search.cli import main
from tradeoff.search.errors import UsageError
from tradeoff.search.study.records import PLAN_ATTR, PLAN_TEXT_ATTR, SENSITIVITY_ATTR
from tradeoff.spaces import Plan
from tradeoff.spaces.allocation import SHARPNESS

GIVEN = {
    "model": "tiny_resnet",
    "finetune_steps": 24,
    "student_steps": 40,
    "latency_repeats": 5,
    "teacher_epochs": 2,
    "space": {"student_width": {"low": 1, "high": 1}},
}


def _search(tmp_path, name: str, n: int, logs: list[str], **given):
    return commands.run_trials(
        "search",
        url=f"sqlite:///{tmp_path / 's.db'}",
        study_name=name,
        given={**GIVEN, **given},
        n_trials=n,
        artifacts=str(tmp_path / "artifacts"),
        threads=2,
        log=logs.append,
    )


@pytest.fixture(scope="module")
def allocated(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("allocated")
    logs: list[str] = []
    study = _search(tmp_path, "a", 3, logs)
    return tmp_path, study, logs


def test_an_allocated_study_measures_its_table_once_and_makes_per_layer_plans(allocated, monkeypatch) -> None:
    tmp_path, study, logs = allocated
    meta = study.user_attrs[SENSITIVITY_ATTR]
    assert len(meta["sha256"]) == 64 and meta["bytes"] > 0
    assert meta["metric"] in ("loss", "drop") and meta["groups"]["weight_bits"] == 13
    assert sum("measuring the sensitivity table" in line for line in logs) == 1
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    allocated_trials = [
        t for t in done if SHARPNESS in t.params and t.params.get("weight_bits") not in (None, 32)
    ]
    assert allocated_trials
    for t in allocated_trials:
        plan = Plan.from_params(t.user_attrs[PLAN_ATTR])
        assert isinstance(plan.weight_bits, dict) and "layer4.0.conv2" in plan.weight_bits
        assert "x" in t.user_attrs[PLAN_TEXT_ATTR]  # bits summarised as counts, e.g. 8x3 4x10

    # resumed: read back, never measured again
    def measure(*args, **kwargs):
        raise AssertionError("the table was measured again")

    monkeypatch.setattr(sensitivity_module, "measure_sensitivity", measure)
    again: list[str] = []
    study = _search(tmp_path, "a", 1, again)
    assert study.user_attrs[SENSITIVITY_ATTR] == meta
    assert not any("measuring the sensitivity table" in line for line in again)


def test_tradeoff_sensitivity_prints_the_table_and_the_report_draws_it(
    allocated, capsys, monkeypatch
) -> None:
    tmp_path, _, _ = allocated
    monkeypatch.chdir(tmp_path)
    common = [
        "--storage",
        f"sqlite:///{tmp_path / 's.db'}",
        "--study-name",
        "a",
        "--artifacts",
        str(tmp_path / "artifacts"),
    ]
    assert main(["sensitivity", *common]) == 0
    out = capsys.readouterr().out
    assert "prune_ratio: pruned at ratio" in out and "weight_bits: weights at bits" in out
    assert "layer4.0.conv2" in out
    assert main(["sensitivity", *common, "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert set(table["rows"]) == {"prune_ratio", "rank_ratio", "weight_bits"}
    assert main(["report", *common, "--output", str(tmp_path / "r.html")]) == 0
    assert "Sensitivity of each layer group alone" in (tmp_path / "r.html").read_text()


def test_a_corrupt_table_is_refused_with_one_line(allocated, tmp_path) -> None:
    tmp_dir, study, _ = allocated
    from tradeoff.search.study.sensitivity import load_sensitivity
    from tradeoff.storage import open_artifact_store

    store = open_artifact_store(str(tmp_dir / "artifacts"))
    meta = dict(study.user_attrs[SENSITIVITY_ATTR])
    study.set_user_attr(SENSITIVITY_ATTR, {**meta, "sha256": "0" * 64})
    try:
        with pytest.raises(UsageError, match="corrupt"):
            load_sensitivity(study, store)
    finally:
        study.set_user_attr(SENSITIVITY_ATTR, meta)


def test_export_rebuilds_an_allocated_plan(allocated, tmp_path) -> None:
    tmp_dir, study, _ = allocated
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    chosen = next(t for t in done if isinstance(Plan.from_params(t.user_attrs[PLAN_ATTR]).weight_bits, dict))
    record = commands.export(
        f"sqlite:///{tmp_dir / 's.db'}",
        "a",
        str(tmp_path / "out"),
        trial=chosen.number,
        weights=None,
        constraints={},
        force=False,
        artifacts=str(tmp_dir / "artifacts"),
        device="cpu",
        log=lambda _m: None,
    )
    assert record["plan"] == chosen.user_attrs[PLAN_ATTR]
    assert (
        json.loads((tmp_path / "out" / "plan.json").read_text())["weight_bits"]
        == chosen.user_attrs[PLAN_ATTR]["weight_bits"]
    )
    assert record["measured"]["size_bytes"] == chosen.user_attrs["size_bytes"]


def test_a_global_study_has_no_table_and_says_so(tmp_path, capsys) -> None:
    logs: list[str] = []
    study = _search(tmp_path, "g", 1, logs, granularity="global")
    assert SENSITIVITY_ATTR not in study.user_attrs
    assert not any("sensitivity" in line for line in logs)
    assert all(SHARPNESS not in t.params for t in study.trials)
    code = main(["sensitivity", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--study-name", "g"])
    err = capsys.readouterr().err
    assert code == 2 and "has no sensitivity table" in err and len(err.strip().splitlines()) == 1


def test_a_layer_study_searches_one_value_per_group(tmp_path) -> None:
    logs: list[str] = []
    study = _search(tmp_path, "l", 1, logs, granularity="layer", sampler="random")
    searched = [t for t in study.trials if any("[" in k for k in t.params)]
    assert searched, [t.params for t in study.trials]
    params = searched[0].params
    assert "weight_bits[fc]" in params and "prune_ratio[layer4.0.conv1]" in params


def test_allocate_student_width_measures_each_stage_and_makes_a_student_per_stage(tmp_path) -> None:
    """--allocate student_width: the table thins each resolution stage of the teacher alone, an
    allocated plan gives each stage its own width under the budget, and export rebuilds it."""
    space = {
        "student_width": {"choices": [0.25, 0.5, 0.75, 1.0]},
        "prune_ratio": {"low": 0, "high": 0},
        "rank_ratio": {"low": 1, "high": 1},
        "weight_bits": {"choices": [32]},
    }
    logs: list[str] = []
    study = _search(tmp_path, "s", 1, logs, space=space, allocate=("student_width",))
    assert study.user_attrs[SENSITIVITY_ATTR]["groups"] == {"student_width": 4}  # 8x8 4x4 2x2 1x1
    study.enqueue_trial(
        {"student_width": 0.5, "prune_ratio": 0.0, "rank_ratio": 1.0, "weight_bits": 32, SHARPNESS: 1.0}
    )
    waiting = len(study.get_trials(states=(optuna.trial.TrialState.WAITING,)))  # the start design's first
    study = _search(tmp_path, "s", waiting, logs, space=space, allocate=("student_width",))
    trial = next(t for t in study.get_trials() if t.params.get(SHARPNESS) == 1.0)
    assert trial.state == optuna.trial.TrialState.COMPLETE, logs
    widths = Plan.from_params(trial.user_attrs[PLAN_ATTR]).student_width
    assert isinstance(widths, dict) and {"8x8", "4x4", "2x2", "1x1"} <= set(widths), widths
    assert len({v for g, v in widths.items() if g != "*"}) > 1  # not one width for all
    assert "student_width={" in trial.user_attrs[PLAN_TEXT_ATTR]
    record = commands.export(
        f"sqlite:///{tmp_path / 's.db'}",
        "s",
        str(tmp_path / "out"),
        trial=trial.number,
        weights=None,
        constraints={},
        force=False,
        artifacts=str(tmp_path / "artifacts"),
        device="cpu",
        log=lambda _m: None,
    )
    assert record["plan"] == trial.user_attrs[PLAN_ATTR]
