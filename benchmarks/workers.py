"""Workers: trials per hour on the bundled task, and the storage's own cost per trial.

    python benchmarks/workers.py                 # both parts, figures as markdown
    python benchmarks/workers.py --quick         # a smoke run: tiny model, few trials

Part 1 runs `tradeoff create` and then 1 or 2 `tradeoff worker` processes on one SQLite study
(each worker takes its share of the cores) and reports complete trials per hour.
Part 2 runs the worker loop (`tradeoff.search.study.worker.run_worker`: the study lock, stale-trial check, ask,
heartbeat, tell) with an objective that does no work, in 1, 4 and 16 processes at once, on
SQLite and on PostgreSQL, and reports the median wall time of one trial as each worker sees it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import optuna
import sqlalchemy

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def tradeoff(args: list[str], cwd: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tradeoff.search.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def trials_per_hour(n_workers: int, budget: int, extra: list[str], cache: str) -> tuple[float, float]:
    work = tempfile.mkdtemp(prefix="tradeoff-workers-")
    env = dict(
        os.environ, PYTHONWARNINGS="ignore", TRADEOFF_CACHE=cache, TRADEOFF_RUN_DIR=os.path.join(work, "run")
    )
    p = tradeoff(["create", "--n-trials", str(budget), *extra], work, env)
    _, err = p.communicate()
    if p.returncode:
        raise SystemExit(err)
    t0 = time.perf_counter()
    workers = [tradeoff(["worker"], work, env) for _ in range(n_workers)]
    for w in workers:
        _, err = w.communicate()
        if w.returncode:
            raise SystemExit(err)
    elapsed = time.perf_counter() - t0
    return (budget - 1) / elapsed * 3600, elapsed


def _noop_worker(url: str, n: int, out: mp.Queue) -> None:
    from tradeoff.search.study.worker import run_worker
    from tradeoff.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(url)
    study = optuna.load_study(study_name="noop", storage=storage)
    times: list[float] = []
    last = [time.perf_counter()]

    def objective(trial: optuna.Trial) -> float:
        return trial.suggest_float("x", 0, 1)

    def on_trial(_t) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    run_worker(study, storage, objective, budget=10**9, n_trials=n, on_trial=on_trial, poll_s=0.05)
    out.put(times)


def storage_overhead(url: str, n_workers: int, n: int) -> float:
    from tradeoff.storage import open_storage

    optuna.create_study(study_name="noop", storage=open_storage(url, heartbeat_interval=None))
    q: mp.Queue = mp.Queue()
    procs = [mp.Process(target=_noop_worker, args=(url, n, q)) for _ in range(n_workers)]
    for p in procs:
        p.start()
    times = [t for _ in procs for t in q.get()]
    for p in procs:
        p.join()
    return statistics.median(times) * 1e3


def pg_database() -> tuple[str, callable]:
    name = f"tradeoff_bench_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with engine.connect() as c:
            c.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return f"postgresql://postgres@127.0.0.1:5432/{name}", drop


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny model and few trials: a smoke run")
    ap.add_argument("--budget", type=int, default=13, help="trials per study in part 1 (baseline included)")
    ap.add_argument("--noop-trials", type=int, default=40, help="trials per worker in part 2")
    args = ap.parse_args()
    extra = (
        ["--model", "tiny_resnet", "--finetune-steps", "20", "--student-steps", "20"] if args.quick else []
    )
    budget = 4 if args.quick else args.budget
    noop = 5 if args.quick else args.noop_trials
    counts = (1, 4) if args.quick else (1, 4, 16)
    cache = os.environ.get("TRADEOFF_CACHE") or tempfile.mkdtemp(prefix="tradeoff-cache-")

    print(
        f"## Trials per hour ({'quick: tiny_resnet' if args.quick else 'bundled task, resnet18'}, "
        f"{budget - 1} trials after the baseline, {os.cpu_count()} cores)\n"
    )
    print("| workers | trials/hour | wall time |\n|---|---|---|")
    for k in (1, 2):
        rate, elapsed = trials_per_hour(k, budget, extra, cache)
        print(f"| {k} | {rate:.0f} | {elapsed:.0f} s |", flush=True)

    print(f"\n## Storage overhead per trial (objective does no work; median of {noop} trials per worker)\n")
    print("| workers | SQLite | PostgreSQL |\n|---|---|---|")
    for k in counts:
        with tempfile.TemporaryDirectory() as d:
            lite = storage_overhead(f"sqlite:///{d}/noop.db", k, noop)
        url, drop = pg_database()
        try:
            pg = storage_overhead(url, k, noop)
        finally:
            drop()
        print(f"| {k} | {lite:.1f} ms | {pg:.1f} ms |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
