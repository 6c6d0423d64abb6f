"""Many workers on one study, on SQLite and on the real PostgreSQL server: real processes, the
compose file's commands."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from conftest import QUICK

from tradeoff.storage import open_storage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = ("accuracy", "params", "flops", "size_bytes", "latency_ms", "energy_mj", "latency_threads")


def compose_command(service: str) -> list[str]:
    with open(os.path.join(ROOT, "docker-compose.yml")) as f:
        command = yaml.safe_load(f)["services"][service]["command"]
    assert command[0] == "tradeoff"
    return command[1:]


def env_for(url: str, tmp_path) -> dict:
    # the host's run directory, where this suite's parallel test processes are registered: the
    # workers divide the cores with them as with each other (a run directory of their own made
    # each take every core beside a busy test process: 4-5x slower in the suite than alone)
    return dict(
        os.environ,
        PYTHONWARNINGS="ignore",
        TRADEOFF_STORAGE=url,
        TRADEOFF_ARTIFACTS=str(tmp_path / "artifacts"),
    )


def start(args: list[str], url: str, tmp_path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tradeoff.search.cli", *args],
        cwd=tmp_path,
        env=env_for(url, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def create(url: str, tmp_path, budget: int, *extra: str) -> None:
    args = compose_command("create")
    args[args.index("--n-trials") + 1] = str(budget)
    # how workers share a study does not depend on the granularity or the bit-widths: one value per
    # knob and int8 alone (one queued variant per trained structure, which workers still share)
    p = start(
        [*args, *QUICK, "--granularity", "global", "--space", "weight_bits=32,8", *extra], url, tmp_path
    )
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err


def load(url: str) -> optuna.Study:
    return optuna.load_study(study_name="tradeoff", storage=open_storage(url, heartbeat_interval=None))


def complete(study) -> list[optuna.trial.FrozenTrial]:
    """The measured plans the budget counts (not the queued other bit-widths of a structure)."""
    from tradeoff.search.study.worker import budgeted

    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and budgeted(t)]


def test_three_workers_end_with_exactly_the_budget(storage_url, tmp_path):
    create(storage_url, tmp_path, 7)
    workers = [start(compose_command("worker"), storage_url, tmp_path) for _ in range(3)]
    errs = []
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err
        errs.append(err)
    study = load(storage_url)
    done = complete(study)
    assert len(done) == 7
    assert len({t.number for t in study.trials}) == len(study.trials)
    assert all(all(name in t.user_attrs for name in FIGURES) for t in done)
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert len({t.user_attrs["worker"] for t in done[1:]}) >= 2  # the work was shared
    # the bit-width variants of every trained structure were measured before the workers stopped
    from tradeoff.search.study.records import ROLE_ATTR, SIBLING_ROLE

    waiting = [t for t in study.trials if t.state == optuna.trial.TrialState.WAITING]
    assert not [t for t in waiting if t.user_attrs.get(ROLE_ATTR) == SIBLING_ROLE]
    assert any(t.user_attrs.get(ROLE_ATTR) == SIBLING_ROLE for t in study.trials)
    assert all(
        err.strip().splitlines()[-1].startswith(("left queued: ", "nothing left queued")) for err in errs
    )


def _wait_for_running(url: str, pid: int, timeout: float = 120) -> optuna.trial.FrozenTrial:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t in load(url).trials:
            mine = t.user_attrs.get("worker", "").endswith(f":{pid}")
            # once its plan is stored: a worker killed between ask and suggest leaves no params to retry
            if t.state == optuna.trial.TrialState.RUNNING and mine and "plan" in t.user_attrs:
                return t
        time.sleep(0.2)
    raise AssertionError("the worker never started a trial")


def test_a_killed_workers_trial_is_failed_and_retried(sqlite_url, tmp_path):
    killed_and_retried(sqlite_url, sqlite_url, tmp_path)


def test_a_worker_killed_behind_the_proxy_loses_no_plan(proxy_url, tmp_path):
    """The study made and run through `tradeoff proxy` in front of PostgreSQL (this is the
    PostgreSQL side of the test above: the proxy's heartbeats and stale check are PostgreSQL's,
    read by the database's clock): the survivor fails the lost trial and measures its plan again."""
    killed_and_retried(proxy_url, proxy_url.database, tmp_path)


def killed_and_retried(url: str, database: str, tmp_path) -> None:
    """A worker SIGKILLed during a trial; another worker fails that trial (no heartbeat) and runs
    its plan again, and the study ends with its budget. ``database``: where to read it back."""
    # 6: the baseline, the four seeded single-technique plans (queued before the retry), the retry;
    # --sampler tpe seeds no space-filling plans, which would be queued before the retry too
    create(url, tmp_path, 6, "--finetune-steps", "300", "--sampler", "tpe")
    beat = ["--heartbeat-interval", "1", "--grace-period", "3"]
    victim = start([*compose_command("worker"), *beat], url, tmp_path)
    killed = _wait_for_running(database, victim.pid)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    survivor = start([*compose_command("worker"), *beat], url, tmp_path)
    _, err = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, err
    study = load(database)
    assert len(complete(study)) == 6
    assert study.trials[killed.number].state == optuna.trial.TrialState.FAIL
    retried = [
        t
        for t in complete(study)
        if optuna.storages.RetryFailedTrialCallback.retried_trial_number(t) == killed.number
    ]
    # the stored params of the failed trial: a snapshot read while the worker was still writing
    # (PostgreSQL reads params and attributes in separate statements) can miss its last param
    assert len(retried) == 1 and retried[0].params == study.trials[killed.number].params


def test_sigterm_finishes_the_trial_and_exits_cleanly(storage_url, tmp_path):
    create(storage_url, tmp_path, 20, "--finetune-steps", "300")
    worker = start(compose_command("worker"), storage_url, tmp_path)
    trial = _wait_for_running(storage_url, worker.pid)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err
    study = load(storage_url)
    assert study.trials[trial.number].state == optuna.trial.TrialState.COMPLETE
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert len(complete(study)) < 20


@pytest.mark.parametrize(
    "url, message",
    [
        (None, "no study named 'tradeoff'"),
        ("postgresql://nosuchuser:hunter2@127.0.0.1:5432/postgres", "cannot connect to the study database"),
        ("postgresql://bob:hunter2@127.0.0.1:9/x", "cannot connect to the study database"),
        ("grpc://127.0.0.1:9", "cannot reach the study proxy grpc://127.0.0.1:9"),
        ("grpc://bob:hunter2@127.0.0.1:9", "malformed proxy URL"),
    ],
)
def test_a_worker_with_bad_coordinates_fails_fast_in_one_line(pg_url, tmp_path, url, message):
    t = time.monotonic()
    p = start(compose_command("worker"), url or pg_url, tmp_path)
    out, err = p.communicate(timeout=60)
    assert time.monotonic() - t < 30
    assert p.returncode == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], err
    assert "hunter2" not in out + err


def test_compose_wires_every_service_to_the_same_storage():
    with open(os.path.join(ROOT, "docker-compose.yml")) as f:
        compose = yaml.safe_load(f)
    services = compose["services"]
    assert {"postgres", "create", "proxy", "worker", "dashboard"} <= set(services)
    for name in ("create", "proxy", "dashboard"):
        assert services[name]["environment"]["TRADEOFF_STORAGE"].startswith("postgresql+psycopg://")
        assert "POSTGRES_PASSWORD" in services[name]["environment"]["TRADEOFF_STORAGE"]
    # the workers reach the same database through the proxy (tests/test_deploy.py checks the port)
    assert services["worker"]["environment"]["TRADEOFF_STORAGE"].startswith("grpc://proxy:")
    assert "proxy" in services["worker"]["depends_on"]
    assert "ports" not in services["proxy"]  # no authentication: never published on the host
    # the dashboard is `tradeoff dashboard`: the URL from the environment, not its command line
    assert services["dashboard"]["command"][:2] == ["tradeoff", "dashboard"]
    assert "TRADEOFF_STORAGE" not in " ".join(services["dashboard"]["command"])
    assert "pgdata" in compose["volumes"]
    assert os.path.exists(os.path.join(ROOT, ".env.example"))


def _restart_postgres_command() -> list[str] | None:
    import shutil

    if not shutil.which("pg_ctlcluster") or not os.path.isdir("/etc/postgresql"):
        return None
    version = sorted(
        os.listdir("/etc/postgresql"), key=lambda v: [int(x) for x in v.split(".") if x.isdigit()]
    )[-1]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"]


def test_workers_ride_out_a_database_restart(pg_url, tmp_path):
    restart = _restart_postgres_command()
    if restart is None:
        if os.environ.get("CI"):
            pytest.fail("pg_ctlcluster is missing: CI cannot restart PostgreSQL")
        pytest.skip("no pg_ctlcluster to restart PostgreSQL with")
    create(pg_url, tmp_path, 10)
    workers = [start(compose_command("worker"), pg_url, tmp_path) for _ in range(2)]
    deadline = time.monotonic() + 300
    while len(complete(load(pg_url))) < 3:
        assert time.monotonic() < deadline, "the workers made no progress"
        assert all(w.poll() is None for w in workers), "a worker ended before the restart"
        time.sleep(0.5)
    before = {t.number: (t.params, t.values) for t in complete(load(pg_url))}
    subprocess.run(restart, check=True, timeout=120, capture_output=True)
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err
    study = load(pg_url)
    assert len(complete(study)) == 10
    after = {t.number: (t.params, t.values) for t in complete(study)}
    assert all(after[n] == v for n, v in before.items())  # nothing stored before the restart was lost
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
