"""Faults that could lose or stall a user's study (issue 24's numbered items): a bound no plan
meets, a short grace period on a shared study, an interrupted `create`, a teacher file that
changed or holds no trained weights, a baseline whose worker was killed, and the cheap
variants a worker must not leave behind."""

from __future__ import annotations

import shutil
import time

import optuna
import pytest
from conftest import QUICKER

from tradeoff.search.cli import main


def _copy(finished_study, tmp_path):
    shutil.copy(finished_study / "tradeoff.db", tmp_path / "tradeoff.db")
    shutil.copytree(finished_study / "tradeoff-artifacts", tmp_path / "tradeoff-artifacts")
    return f"sqlite:///{tmp_path / 'tradeoff.db'}"


def test_a_bound_no_plan_meets_ends_the_search_with_the_nearest_value(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # every plan structural (no quantization), so each is checked, and broken, before training
    args = ["search", "--n-trials", "2", *QUICKER, "--space", "weight_bits=32", "--max-size-mb", "0.000001"]
    t = time.monotonic()
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("tradeoff: error: no plan meets the bounds: ")
    assert "--max-size-mb 1e-06 (the smallest size measured: " in err[-1]
    study = optuna.load_study(study_name="tradeoff", storage="sqlite:///tradeoff.db")
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert 0 < len(pruned) <= 10, "a run of 2 plans gives up after at most 10 pruned plans in a row"
    assert time.monotonic() - t < 600  # it ends by itself (the bug: it ran until killed)


def test_a_grace_period_shorter_than_two_heartbeats_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["search", "--n-trials", "1", *QUICKER, "--grace-period", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--grace-period 1 is shorter than twice --heartbeat-interval 60" in err
    assert "\n" not in err and not (tmp_path / "tradeoff.db").exists()


@pytest.mark.parametrize("their_interval, failed", [(60, False), (1, True)])
def test_a_short_grace_never_fails_a_trial_whose_worker_beats_more_slowly(
    finished_study, tmp_path, cli, their_interval, failed
):
    """Another worker's live trial, beating every 60 s, last beat 3 s ago: a search started with
    --heartbeat-interval 1 --grace-period 2 leaves it running; had that worker beaten every
    second, the same silence means it is gone, and the trial is failed and retried."""
    from tradeoff.search.records import HEARTBEAT_ATTR, WORKER_ATTR

    url = _copy(finished_study, tmp_path)
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=their_interval)
    study = optuna.load_study(study_name="tradeoff", storage=storage)
    done = study.trials[1]
    study.enqueue_trial(done.params)
    with pytest.warns(UserWarning):  # Optuna: heartbeats belong to Study.optimize
        live = study.ask()
    live.set_user_attr(WORKER_ATTR, "another-host:4242")
    live.set_user_attr(HEARTBEAT_ATTR, their_interval)
    storage.record_heartbeat(live._trial_id)
    time.sleep(3)
    r = cli("search", "--n-trials", "1", "--heartbeat-interval", "1", "--grace-period", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    state = optuna.load_study(study_name="tradeoff", storage=url).trials[live.number].state
    assert state == (optuna.trial.TrialState.FAIL if failed else optuna.trial.TrialState.RUNNING)
