"""The worker loop: join a study and run its trials until its budget is met or it is stopped.

    while not stopped:
        with the study's budget lock:             # one worker at a time decides
            fail trials whose worker vanished       # heartbeat; a retry is enqueued
            complete >= budget            -> done
            complete + running >= budget  -> wait (a running trial may still fail)
            else                          -> ask a trial (a waiting retry first)
        run it with a heartbeat, tell the result

The budget lock is what makes "exactly N complete trials" hold with many workers: a PostgreSQL
advisory lock (or MySQL's GET_LOCK) for a shared database, a file lock for SQLite.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator

import optuna
import sqlalchemy
from optuna.trial import TrialState

from search.records import FAIL_ATTR, WORKER_ATTR
from storage.urls import transient


@contextlib.contextmanager
def budget_lock(storage: optuna.storages.RDBStorage, study_name: str) -> Iterator[None]:
    """Exclusive, across processes and hosts, for the study ``study_name``."""
    engine = storage.engine
    backend = engine.url.get_backend_name()
    key = int.from_bytes(hashlib.sha256(f"tradeoff:{study_name}".encode()).digest()[:8], "big", signed=True)
    if backend == "sqlite":
        path = (engine.url.database or "tradeoff") + ".tradeoff-lock"
        with open(path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return
    if backend == "postgresql":
        lock, unlock = "SELECT pg_advisory_lock(:k)", "SELECT pg_advisory_unlock(:k)"
    else:
        lock, unlock, key = "SELECT GET_LOCK(:k, 600)", "SELECT RELEASE_LOCK(:k)", str(key)
    deadline = time.monotonic() + storage.retry_for_s
    while True:  # the database may be restarting: wait for it as the storage does
        conn = None
        try:
            conn = engine.connect()
            conn.execute(sqlalchemy.text(lock), {"k": key})
            break
        except sqlalchemy.exc.DBAPIError as e:
            if conn is not None:
                with contextlib.suppress(sqlalchemy.exc.DBAPIError):
                    conn.close()
            if not transient(e) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    with conn:
        try:
            yield
        finally:
            with contextlib.suppress(sqlalchemy.exc.DBAPIError):  # a lost connection released it
                conn.execute(sqlalchemy.text(unlock), {"k": key})
                conn.commit()


@contextlib.contextmanager
def heartbeat(storage: optuna.storages.RDBStorage, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat every interval while the body runs (Optuna does this inside
    ``study.optimize``; the worker asks and tells trials itself, so it keeps the beat here)."""
    interval = storage.get_heartbeat_interval()
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            with contextlib.suppress(Exception):  # a database blip: the next beat retries
                storage.record_heartbeat(trial_id)

    storage.record_heartbeat(trial_id)
    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class Stopper:
    """SIGINT/SIGTERM: the first asks the worker to stop after the current trial; the second
    interrupts the trial, which is then told FAILED, so no trial is left RUNNING."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> Stopper:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


def counts(study: optuna.Study) -> tuple[int, int]:
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    return complete, len(trials) - complete


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_worker(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    objective: Callable[[optuna.Trial], list[float]],
    *,
    budget: int,
    n_trials: int | None = None,
    stopper: Stopper | None = None,
    on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None,
    before_trial: Callable[[], None] | None = None,
    poll_s: float = 2.0,
) -> int:
    """Run trials of ``study`` until it has ``budget`` complete ones, this worker has run
    ``n_trials``, or ``stopper`` asks it to stop. ``storage`` is the study's RDBStorage (its
    engine holds the lock). Returns the number of trials it ran."""
    ran = 0
    stopper = stopper or Stopper()
    while not stopper.requested and (n_trials is None or ran < n_trials):
        with budget_lock(storage, study.study_name), warnings.catch_warnings():
            # Optuna warns that heartbeats belong to Study.optimize: this loop keeps its own.
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
            complete, running = counts(study)
            if complete >= budget:
                break
            trial = study.ask() if complete + running < budget else None
        if trial is None:
            time.sleep(poll_s)  # a running trial may yet fail and leave room
            continue
        if before_trial is not None:
            before_trial()
        trial.set_user_attr(WORKER_ATTR, worker_id())
        state, values = TrialState.FAIL, None
        try:
            with heartbeat(storage, trial._trial_id):
                values = objective(trial)
            state = TrialState.COMPLETE
        except KeyboardInterrupt:
            trial.set_user_attr(FAIL_ATTR, "the worker was stopped during the trial")
            stopper.requested = True
        except Exception:  # noqa: BLE001 - the runner recorded the reason; the study goes on
            pass
        frozen = study.tell(trial, values if state == TrialState.COMPLETE else None, state=state)
        ran += 1
        if on_trial is not None:
            on_trial(frozen)
    return ran


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def host_share() -> Iterator[Callable[[], int]]:
    """Register this worker on this host; yields a function giving its share of the cores
    (cores // live workers registered here, at least 1), to be asked before each trial."""
    import tempfile

    folder = os.environ.get("TRADEOFF_RUN_DIR") or os.path.join(tempfile.gettempdir(), "tradeoff-workers")
    os.makedirs(folder, exist_ok=True)
    mine = os.path.join(folder, str(os.getpid()))
    open(mine, "w").close()

    def share() -> int:
        alive = 0
        for name in os.listdir(folder):
            if not name.isdigit():
                continue
            if _alive(int(name)):
                alive += 1
            else:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(folder, name))
        return max(1, (os.cpu_count() or 1) // max(1, alive))

    try:
        yield share
    finally:
        with contextlib.suppress(OSError):
            os.remove(mine)
