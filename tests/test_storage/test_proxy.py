"""`tradeoff proxy`: Optuna's gRPC storage proxy with tradeoff's study lock and heartbeats, a real
server process in front of the real PostgreSQL server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import optuna
import pytest

from tradeoff.storage import StorageError, open_storage


@pytest.fixture(scope="module")
def shared_proxy(tmp_path_factory):
    """One proxy and database for the tests here that use study and lock names of their own."""
    from conftest import _postgres_database, serve_proxy

    for database in _postgres_database():
        yield from serve_proxy(database, tmp_path_factory.mktemp("proxy") / "proxy.log")


FLEET_WORKER = textwrap.dedent(
    """
    import sys, time, warnings
    import optuna
    from tradeoff.search.study.worker import run_worker
    from tradeoff.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    storage = open_storage(sys.argv[1], heartbeat_interval=5)
    study = optuna.load_study(study_name="fleet", storage=storage, sampler=optuna.samplers.RandomSampler())

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        time.sleep(0.3)
        return x

    print(run_worker(study, storage, objective, budget=int(sys.argv[2]), poll_s=0.2))
    """
)


def test_sixteen_workers_through_the_proxy_end_with_exactly_the_budget(shared_proxy):
    proxy_url = shared_proxy
    storage = open_storage(proxy_url, heartbeat_interval=None)
    optuna.create_study(study_name="fleet", storage=storage)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", FLEET_WORKER, proxy_url, "40"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONWARNINGS="ignore"),
        )
        for _ in range(16)
    ]
    ran = []
    for w in workers:
        out, err = w.communicate(timeout=900)
        assert w.returncode == 0, err
        ran.append(int(out.split()[-1]))
    # read back from the database itself, not through the proxy
    study = optuna.load_study(
        study_name="fleet", storage=open_storage(proxy_url.database, heartbeat_interval=None)
    )
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 40 == sum(ran)
    assert len(states) == 40  # nothing left running, nothing asked beyond the budget
    assert sum(n > 0 for n in ran) >= 4  # the work was shared


def test_the_proxys_lock_and_the_databases_lock_are_one(shared_proxy):
    proxy_url = shared_proxy
    through = open_storage(proxy_url, heartbeat_interval=None)
    direct = open_storage(proxy_url.database, heartbeat_interval=None)
    events: list[str] = []

    def hold(storage, name: str, seconds: float) -> None:
        with storage.lock("lock-one"):
            events.append(f"{name} in")
            time.sleep(seconds)
            events.append(f"{name} out")

    for first, second in ((through, direct), (direct, through)):
        events.clear()
        a = threading.Thread(target=hold, args=(first, "a", 1.0))
        a.start()
        while not events:
            time.sleep(0.01)
        b = threading.Thread(target=hold, args=(second, "b", 0.0))
        b.start()
        a.join()
        b.join()
        assert events == ["a in", "a out", "b in", "b out"]


def test_a_worker_killed_while_holding_the_lock_releases_it(shared_proxy):
    proxy_url = shared_proxy
    code = (
        "import sys, time\nfrom tradeoff.storage import open_storage\n"
        "with open_storage(sys.argv[1]).lock('lock-killed'):\n"
        "    print('held', flush=True)\n    time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, proxy_url], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    storage = open_storage(proxy_url, heartbeat_interval=None)
    got = threading.Event()

    def take() -> None:
        with storage.lock("lock-killed"):
            got.set()

    waiter = threading.Thread(target=take, daemon=True)
    waiter.start()
    assert not got.wait(1.0)  # held by the live process
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert got.wait(120)  # its connection dropped, and the lock with it


def test_heartbeats_through_the_proxy_say_which_trials_are_stale(shared_proxy):
    proxy_url = shared_proxy
    storage = open_storage(proxy_url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="beats", storage=storage)
    quiet, beating = study.ask(), study.ask()
    storage.record_heartbeat(quiet._trial_id)
    deadline = time.monotonic() + 60
    while quiet._trial_id not in storage._get_stale_trial_ids(study._study_id):
        storage.record_heartbeat(beating._trial_id)
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert beating._trial_id not in storage._get_stale_trial_ids(study._study_id)
    ages = storage.heartbeat_ages(study._study_id)
    assert ages[quiet._trial_id] > 2 and ages[beating._trial_id] < 2


def test_deleting_a_study_through_the_proxy_is_refused(shared_proxy):
    proxy_url = shared_proxy
    import grpc

    storage = open_storage(proxy_url, heartbeat_interval=None)
    optuna.create_study(study_name="kept", storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1), 2)
    with pytest.raises(grpc.RpcError, match="--allow-delete"):
        optuna.delete_study(study_name="kept", storage=storage)
    again = optuna.load_study(
        study_name="kept", storage=open_storage(proxy_url.database, heartbeat_interval=None)
    )
    assert len(again.trials) == 2


@pytest.mark.parametrize(
    "url, message",
    [
        ("grpc://nohost", "malformed proxy URL"),
        ("grpc://user:secret@host:13000", "malformed proxy URL"),
        ("grpc://127.0.0.1:9", "cannot reach the study proxy grpc://127.0.0.1:9"),
    ],
)
def test_a_bad_proxy_url_is_one_clear_error(url, message):
    with pytest.raises(StorageError, match=message) as e:
        open_storage(url, connect_timeout_s=2)
    assert "secret" not in str(e.value)


def test_the_proxy_command_refuses_a_proxy_url_and_a_taken_port(shared_proxy, tmp_path):
    proxy_url = shared_proxy
    port = proxy_url.rpartition(":")[2]
    for args, message in (
        (["--storage", proxy_url], "is a proxy already"),
        (
            ["--storage", f"sqlite:///{tmp_path / 'x.db'}", "--port", port],
            f"cannot listen on 127.0.0.1:{port}",
        ),
    ):
        p = subprocess.run(
            [sys.executable, "-m", "tradeoff.search.cli", "proxy", *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert p.returncode == 2, p.stderr
        lines = [line for line in p.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], p.stderr


def test_more_workers_waiting_for_the_lock_than_the_proxy_has_threads_all_get_it(pg_url):
    """A proxy with 17 threads lets one caller wait for the lock at a time; the rest are told to
    retry, so the holder's own storage calls always find a thread, and each waiter gets the lock."""
    import socket

    from tradeoff.storage.proxy import make_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_server(pg_url, "127.0.0.1", port, threads=17)
    server.start()
    try:
        url = f"grpc://127.0.0.1:{port}"
        optuna.create_study(study_name="busy", storage=open_storage(url, heartbeat_interval=None))
        inside, most, got = [0], [0], []
        guard = threading.Lock()

        def work(n: int) -> None:
            storage = open_storage(url, heartbeat_interval=None)
            with storage.lock("busy"):
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                storage.get_all_studies()  # a storage call while holding the lock
                time.sleep(0.1)
                with guard:
                    inside[0] -= 1
                got.append(n)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert sorted(got) == list(range(8)) and most[0] == 1
    finally:
        server.stop(grace=None)
