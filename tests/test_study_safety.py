"""Faults that could lose or stall a user's study (issue 24's numbered items): a bound no plan
meets, a short grace period on a shared study, an interrupted `create`, a teacher file that
changed or holds no trained weights, a baseline whose worker was killed, and the cheap
variants a worker must not leave behind."""

from __future__ import annotations

import shutil
import time

import optuna
import pytest
import torch
from conftest import QUICKER

from tradeoff.search.cli import main


def _copy(finished_study, tmp_path):
    shutil.copy(finished_study / "tradeoff.db", tmp_path / "tradeoff.db")
    shutil.copytree(finished_study / "tradeoff-artifacts", tmp_path / "tradeoff-artifacts")
    return f"sqlite:///{tmp_path / 'tradeoff.db'}"


def test_a_bound_no_plan_meets_ends_the_search_with_the_nearest_value(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # every plan structural (no quantization), so each is checked, and broken, before training; a
    # latency bound (a size bound the smallest plan breaks is refused before the study is made)
    args = [
        "search",
        "--n-trials",
        "2",
        *QUICKER,
        "--space",
        "weight_bits=32",
        "--max-latency-ms",
        "0.000001",
    ]
    t = time.monotonic()
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("tradeoff: error: no plan meets the bounds: ")
    assert "--max-latency-ms 1e-06 (the smallest latency measured: " in err[-1]
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


def test_a_short_grace_never_fails_a_trial_whose_worker_beats_more_slowly(finished_study, tmp_path, cli):
    """Two other workers' live trials, last beat 3 s ago: one beats every 60 s, one every second.
    A search started with --heartbeat-interval 1 --grace-period 2 leaves the first running (its
    silence is normal); the second's worker is gone, so that trial is failed and retried."""
    from tradeoff.search.study.records import HEARTBEAT_ATTR, WORKER_ATTR

    url = _copy(finished_study, tmp_path)
    live = {}
    for interval in (60, 1):
        storage = optuna.storages.RDBStorage(url, heartbeat_interval=interval)
        study = optuna.load_study(study_name="tradeoff", storage=storage)
        study.enqueue_trial(study.trials[1 + len(live)].params)
        with pytest.warns(UserWarning):  # Optuna: heartbeats belong to Study.optimize
            trial = study.ask()
        trial.set_user_attr(WORKER_ATTR, f"another-host:{4242 + interval}")
        trial.set_user_attr(HEARTBEAT_ATTR, interval)
        storage.record_heartbeat(trial._trial_id)
        live[interval] = trial.number
    time.sleep(3)
    r = cli("search", "--n-trials", "1", "--heartbeat-interval", "1", "--grace-period", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    trials = optuna.load_study(study_name="tradeoff", storage=url).trials
    assert trials[live[60]].state == optuna.trial.TrialState.RUNNING
    assert trials[live[1]].state == optuna.trial.TrialState.FAIL


def test_a_swapped_cached_teacher_is_not_used(finished_study, tmp_path, monkeypatch):
    """The study's teacher in the local cache is checked against the study's SHA-256 on every
    load: a swapped file is dropped and the study's artifact fetched again."""
    from tradeoff.search.commands import load_study
    from tradeoff.search.study.records import TEACHER_ATTR
    from tradeoff.search.task.tasks import task_for
    from tradeoff.search.task.teacher import ensure_teacher
    from tradeoff.storage import open_artifact_store

    url = _copy(finished_study, tmp_path)
    monkeypatch.setenv("TRADEOFF_CACHE", str(tmp_path / "cache"))
    study, config = load_study(url, "tradeoff")
    task = task_for(config)
    store = open_artifact_store(str(tmp_path / "tradeoff-artifacts"))
    good = ensure_teacher(study, task, store, train=False, log=lambda _m: None).state_dict()
    cached = tmp_path / "cache" / f"teacher-{study.user_attrs[TEACHER_ATTR]['sha256']}.pt"
    assert cached.exists()
    torch.save({k: torch.zeros_like(v) for k, v in good.items()}, cached)  # swapped by someone
    said = []
    again = ensure_teacher(study, task, store, train=False, log=said.append).state_dict()
    assert all(torch.equal(good[k], again[k]) for k in good)
    assert any("does not match the study's SHA-256" in m for m in said)


def test_a_changed_teacher_in_the_task_cache_is_trained_again(tiny_task, tmp_path, monkeypatch):
    from tradeoff.search.task.teacher import train_teacher

    monkeypatch.setenv("TRADEOFF_CACHE", str(tmp_path))
    model, path, seconds = train_teacher(tiny_task, log=lambda _m: None)
    assert seconds > 0 and (tmp_path / (tmp_path / path).name).with_suffix(".pt.sha256").exists()
    _, _, seconds = train_teacher(tiny_task, log=lambda _m: None)
    assert seconds == 0  # the cache, unchanged
    torch.save({k: torch.zeros_like(v) for k, v in model.state_dict().items()}, path)
    said = []
    again, _, seconds = train_teacher(tiny_task, log=said.append)
    assert seconds > 0 and any("changed since it was written" in m for m in said)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())


def _killed_create(tmp_path, url: str) -> list[str]:
    """`tradeoff create` killed while it trains the teacher: the study is stored (its
    configuration, budget and queued start design) without a teacher. Returns the arguments."""
    import signal
    import subprocess
    import sys

    from tradeoff.search.study.records import CONFIG_ATTR, TEACHER_ATTR

    args = ["create", "--storage", url, "--n-trials", "3", *QUICKER, "--teacher-epochs", "40"]
    p = subprocess.Popen(
        [sys.executable, "-m", "tradeoff.search.cli", *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert p.poll() is None, p.stderr.read()
        try:
            attrs = optuna.load_study(study_name="tradeoff", storage=url).user_attrs
        except KeyError:
            attrs = {}
        if CONFIG_ATTR in attrs and TEACHER_ATTR not in attrs:
            break
        time.sleep(0.2)
    time.sleep(1)  # inside the teacher's training (40 epochs of a fresh cache: about 5 s)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert TEACHER_ATTR not in optuna.load_study(study_name="tradeoff", storage=url).user_attrs
    return args


def test_an_interrupted_create_resumes_and_a_killed_baselines_retry_runs_first(tmp_path, cli, monkeypatch):
    """Item 5: `create` killed while it trains the teacher leaves a study that `worker` refuses
    to join and that the same `create` finishes when run again. Item 7: the baseline's worker
    was SIGKILLed mid-trial (RUNNING under a process that is gone, its params stored): its retry
    is queued behind the start design, and the resumed create must still measure it first."""
    import os
    import socket
    import subprocess

    from tradeoff.search.study.records import BASELINE_ATTR, ROLE_ATTR, WORKER_ATTR
    from tradeoff.search.study.study import stored_config
    from tradeoff.spaces.allocation import suggest_values

    monkeypatch.setenv("TRADEOFF_CACHE", str(tmp_path / "cache"))  # no teacher cached by another test
    url = f"sqlite:///{tmp_path / 'study.db'}"
    args = _killed_create(tmp_path, url)
    r = cli("worker", "--storage", url, cwd=tmp_path)
    assert r.returncode == 2 and "has not finished" in r.stderr and "create" in r.stderr

    study = optuna.load_study(study_name="tradeoff", storage=url)
    gone = subprocess.Popen(["true"])
    gone.wait()
    baseline = study.ask()  # the first queued plan: the baseline
    assert baseline.user_attrs[ROLE_ATTR] == "baseline"
    config = stored_config(study._storage, "tradeoff")
    suggest_values(baseline, config.space, config.granularity, None)  # what the runner does first
    baseline.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{gone.pid}")
    assert not os.path.exists(f"/proc/{gone.pid}")

    r = cli(*args, cwd=tmp_path, timeout=600)  # the same create again: it resumes
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="tradeoff", storage=url)
    assert study.trials[baseline.number].state == optuna.trial.TrialState.FAIL
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and done[0].user_attrs[ROLE_ATTR] == "baseline"  # not a seeded plan in its place
    assert BASELINE_ATTR in study.user_attrs
    r = cli("select", "--storage", url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli("worker", "--storage", url, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    r = cli(*args, cwd=tmp_path)  # a finished create is not run twice
    assert r.returncode == 2 and "already exists" in r.stderr
