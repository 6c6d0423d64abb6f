"""Studies under constraints, end to end: every command on a study created with each constraint
flag, the real `tradeoff` command in a subprocess where a trial runs, on a real SQLite file.

Each trial's stored constraint values must agree with its figures; infeasible trials are
stored, counted as infeasible by `front`, and never chosen by `select` or `export`.
"""

from __future__ import annotations

import json
import urllib.request

import optuna
import pytest
from conftest import QUICKER, dashboard_server, run_tradeoff

from tradeoff.search.cli import main
from tradeoff.search.study.goals import GOALS_ATTR
from tradeoff.search.study.records import (
    BASELINE_ATTR,
    CONFIG_ATTR,
    broken_constraints,
    constraints_of,
    feasible,
)
from tradeoff.search.study.worker import budgeted
from tradeoff.search.views.cost import constraint_values
from tradeoff.storage import open_storage

# tiny_resnet's float weights are 1.26 MB: a 1 MB bound leaves the baseline infeasible and the
# int8 and half-width plans feasible. No plan runs in 10 ns: every trial is infeasible. The
# accuracy and energy bounds may go either way; the checks hold for both.
CASES = {
    "max_size_mb": ["--max-size-mb", "1.0"],
    "min_accuracy": ["--min-accuracy", "0.9"],
    "max_latency_ms": ["--max-latency-ms", "0.00001"],
    "max_energy_mj": ["--max-energy-mj", "0.2"],
    "all": [
        "--max-size-mb",
        "1.0",
        "--min-accuracy",
        "0.3",
        "--max-latency-ms",
        "1000",
        "--max-energy-mj",
        "50",
    ],
}
SURELY_INFEASIBLE = {"max_size_mb": [0], "max_latency_ms": "all", "all": [0]}


def load(cwd, name: str = "tradeoff") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd / 'tradeoff.db'}")


def complete(study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def check_stored(study, bounds: dict[str, float]) -> list[optuna.trial.FrozenTrial]:
    """Every complete trial carries one value per constraint, computed from its own figures;
    returns the infeasible ones."""
    trials = complete(study)
    assert trials
    for t in trials:
        stored = constraints_of(t)
        assert set(stored) == set(bounds), (t.number, stored)
        assert stored == pytest.approx(constraint_values(t.user_attrs, bounds))
    return [t for t in trials if not feasible(t)]


def in_process(capsys, *args):
    """`tradeoff ARGS` in this process (no trial runs): (code, out, err)."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def bounds_of(flags: list[str]) -> dict[str, float]:
    return {flags[i][2:].replace("-", "_"): float(flags[i + 1]) for i in range(0, len(flags), 2)}


@pytest.mark.parametrize("case", list(CASES))
def test_every_command_on_a_study_with_constraints(case, tmp_path, monkeypatch, capsys):
    flags, bounds = CASES[case], bounds_of(CASES[case])
    surely = SURELY_INFEASIBLE.get(case, [])
    r = run_tradeoff("search", "--n-trials", "3", *QUICKER, *flags, cwd=tmp_path)
    assert "Traceback" not in r.stderr
    if surely == "all":  # no plan can meet it: each is pruned before training until the run gives up
        assert r.returncode == 2, r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("tradeoff: error: no plan meets the bounds: ")
        assert "--max-latency-ms 1e-05 (the smallest latency measured: " in last
    else:
        assert r.returncode == 0, r.stderr
        assert "[3/3] trial #2" in r.stderr
    if case == "all":  # a resumed search keeps the study's constraints (every flag at once)
        resumed = run_tradeoff("search", "--n-trials", "1", cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        assert "resuming study 'tradeoff'" in resumed.stderr

    study = load(tmp_path)
    measured = [t for t in complete(study) if budgeted(t)]
    infeasible = check_stored(study, bounds)
    if surely == "all":
        # measured: only plans with nothing to train (the baseline, int8 alone), which cost no fine-tune
        assert 0 in {t.number for t in measured}
        assert all(t.user_attrs["time_finetune_s"] == 0 for t in complete(study))
        assert len(infeasible) == len(complete(study))
        pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
        assert pruned and all(t.constraints["max_latency_ms"] > 0 for t in pruned)
    else:
        assert len(measured) == (4 if case == "all" else 3)
    for number in surely if surely != "all" else []:
        assert number in {t.number for t in infeasible}
    # the progress line says which constraint a trial breaks
    for t in infeasible:
        if t.number < 3:
            line = next(x for x in r.stderr.splitlines() if f"trial #{t.number} complete" in x)
            assert f"infeasible: {', '.join(broken_constraints(t))}" in line

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRADEOFF_STORAGE", raising=False)
    feasible_numbers = {t.number for t in complete(study) if feasible(t)}

    code, out, err = in_process(capsys, "front")
    assert code == 0, err
    listed = {int(line.split()[0][1:]) for line in out.splitlines() if line.startswith("#")}
    assert listed <= feasible_numbers
    if infeasible:
        assert f"{len(infeasible)} infeasible (" in out
    if not feasible_numbers:
        assert "meets the study's constraints" in out

    code, out, err = in_process(capsys, "select")
    if feasible_numbers:
        assert code == 0, err
        rows = [line.split() for line in out.splitlines()[1:]]
        chosen = {int(row[1][1:]) for row in rows if len(row) > 1 and row[1].startswith("#")}
        assert chosen and chosen <= feasible_numbers
    else:
        assert code == 2 and "no trial meets the constraints" in err

    code, out, err = in_process(capsys, "report", "--output", str(tmp_path / "report.html"))
    if feasible_numbers:
        assert code == 0, err
        assert (tmp_path / "report.html").stat().st_size > 100_000 and (tmp_path / "report.png").exists()
    else:
        assert code == 2 and "no measured feasible trial" in err

    code, out, err = in_process(capsys, "export", "--output", str(tmp_path / "out"))
    if feasible_numbers:
        assert code == 0, err
        record = json.loads((tmp_path / "out" / "record.json").read_text())
        assert record["trial"] in feasible_numbers and record["feasible"] is True
        assert set(record["constraints"]) == set(bounds)
    else:
        assert code == 2 and "no trial meets the constraints" in err
        assert not (tmp_path / "out").exists()


def test_workers_create_and_dashboard_on_a_study_with_constraints(
    postgres_url, tmp_path, monkeypatch, capsys
):
    storage_url = postgres_url  # workers share a study on PostgreSQL; constraints are storage-blind
    flags = CASES["all"]
    bounds = bounds_of(flags)
    at = ["--storage", storage_url]
    r = run_tradeoff("create", *at, "--n-trials", "3", *QUICKER, *flags, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    w = run_tradeoff("worker", *at, cwd=tmp_path)
    assert w.returncode == 0, w.stderr
    assert "Traceback" not in w.stderr
    study = optuna.load_study(
        study_name="tradeoff", storage=open_storage(storage_url, heartbeat_interval=None)
    )
    assert len([t for t in complete(study) if budgeted(t)]) == 3  # and the variants, besides
    infeasible = check_stored(study, bounds)
    assert 0 in {t.number for t in infeasible}  # the float baseline is over 1 MB

    # an explicit --trial of an infeasible trial exports with a warning and says so in the record
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRADEOFF_STORAGE", raising=False)
    code, out, err = in_process(capsys, "export", *at, "--trial", "0", "--output", str(tmp_path / "base"))
    assert code == 0, err
    assert "breaks the study's constraints (max_size_mb)" in err
    assert json.loads((tmp_path / "base" / "record.json").read_text())["feasible"] is False
    code, out, err = in_process(capsys, "verify", str(tmp_path / "base"))
    assert code == 0, err

    # the dashboard reports Optuna 5's named constraints where its plots look for them
    with dashboard_server(tmp_path, *at) as url:
        with urllib.request.urlopen(f"{url}/api/studies/{study._study_id}", timeout=30) as resp:
            detail = json.loads(resp.read())
    shown = {t["number"]: t["constraints"] for t in detail["trials"]}
    for t in complete(study):
        assert shown[t.number] == pytest.approx([v for _, v in sorted(constraints_of(t).items())])
        assert any(v > 0 for v in shown[t.number]) == (not feasible(t))


def test_stop_when_met_stops_at_the_first_plan_meeting_every_constraint(tmp_path):
    """1 MB: the baseline breaks it, the int8 and half-width plans of the start design meet it;
    the search stops there, with most of its budget unspent, and says which plan met it."""
    r = run_tradeoff(
        "search", "--n-trials", "8", "--stop-when-met", "--max-size-mb", "1.0", *QUICKER, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    done = complete(load(tmp_path))
    met = [t for t in done if feasible(t)]
    assert len(met) == 1 and done[-1] is met[0] and len(done) < 8, [(t.number, feasible(t)) for t in done]
    assert f"stopped: trial #{met[0].number} (" in r.stderr and "meets every constraint" in r.stderr
    # resumed with it again: the study already holds a plan that meets them; nothing more runs
    r = run_tradeoff("search", "--n-trials", "4", "--stop-when-met", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(complete(load(tmp_path))) == len(done)


def test_relative_goals_resolve_once_the_baseline_is_measured(tmp_path):
    """--max-size-mb /2 and --max-accuracy-drop 50: stored as given, resolved from the baseline's
    figures into absolute bounds stored beside them, checked on every trial, shown by `front`."""
    flags = ["--max-size-mb", "/2", "--max-accuracy-drop", "50"]
    r = run_tradeoff("search", "--n-trials", "4", *flags, *QUICKER, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study = load(tmp_path)
    config = json.loads(study.user_attrs[CONFIG_ATTR])
    assert config["goals"] == {"max_size_mb": "/2", "min_accuracy": "drop 50"} and config["constraints"] == {}
    baseline = study.user_attrs[BASELINE_ATTR]
    goals = study.user_attrs[GOALS_ATTR]
    assert goals["max_size_mb"]["bound"] == pytest.approx(baseline["size_bytes"] / 1e6 / 2)
    assert goals["min_accuracy"]["bound"] == pytest.approx(baseline["accuracy"] - 0.5)
    bounds = {n: g["bound"] for n, g in goals.items()}
    check_stored(study, bounds)
    assert not feasible(complete(study)[0])  # the baseline is twice the bound
    assert any(feasible(t) for t in complete(study))  # int8 is a quarter of it
    front = run_tradeoff("front", cwd=tmp_path)
    assert front.returncode == 0, front.stderr
    assert f"constraints: --max-size-mb /2 ({bounds['max_size_mb']:g} MB)" in front.stdout, front.stdout
    chosen = run_tradeoff("select", cwd=tmp_path)
    assert chosen.returncode == 0, chosen.stderr
    assert "the study's constraints: --max-size-mb /2 (" in chosen.stdout
    assert f"#{complete(study)[0].number} " not in chosen.stdout.split("the study's")[0]  # not the baseline
    # resumed with another form of the same bound: refused, nothing changes
    r = run_tradeoff("search", "--n-trials", "1", "--max-size-mb", "/3", cwd=tmp_path)
    assert r.returncode == 2 and "goals" in r.stderr, r.stderr
