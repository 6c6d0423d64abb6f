"""Scale: one ask + tell as a study grows, and a fleet's trials per second, on PostgreSQL.

    python benchmarks/scale.py ask      # ask + tell by study size and sampler (~15 min)
    python benchmarks/scale.py fleet    # trials per second, 1/4/16/64 workers, direct and proxy (~15 min)
    python benchmarks/scale.py --quick ask fleet   # a smoke run: small studies, short windows
    python benchmarks/scale.py tables   # the tables of the saved runs (benchmarks/results/scale-*.json)

``ask``: a study on loopback PostgreSQL holds N complete trials of the default global space
(plans drawn at random, figures made up from the plan with noise: the objectives are
correlated as real ones are, so the front has tens of plans, not thousands), grown to 100,
1,000, 5,000 and 20,000. At each size, for each sampler ``--sampler`` can choose, a
long-lived worker's loop step is timed 20 times after one warm-up: ``ask`` (the reservation
the worker makes under the study lock), the plan's proposal (``suggest_plan``: Optuna samples
relative parameters lazily, at the first suggest, so this is outside the lock) and ``tell``.
The database's share is the time SQLAlchemy spends executing statements (its
``before/after_cursor_execute`` events: the SQL sent, run and answered); the rest is Python
(Optuna's cache and ORM, the sampler).

``fleet``: W worker processes (``run_worker``: the study lock, the stale-trial check, the
count, ask, heartbeat, tell; the default sampler proposing through ``suggest_plan``) run a
``--sleep-s`` objective (10 s) for a window after all have started; trials per second
finished inside the window against the ideal W / sleep. Directly on PostgreSQL and through
``tradeoff proxy`` (Optuna's gRPC storage proxy with tradeoff's lock and heartbeat service).
The time each worker held the study lock is recorded too (median, 90th percentile).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np
import optuna
import sqlalchemy
from workers import pg_database  # beside this script: a fresh database on loopback PostgreSQL

SIZES = (100, 1000, 5000, 20000)
WORKERS = (1, 4, 16, 32, 64)
# "tpe-uncapped": the default's TPE without its history cap (what auto was before the cap)
SAMPLERS = ("auto", "tpe-uncapped", "nsga2", "random", "gp")
GP_MAX = 100  # GP refits its model on every proposal (9 s at 224 trials here): not timed beyond this
HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, Optuna {optuna.__version__}"


def figures(params: dict, rng: np.random.Generator) -> list[float]:
    """Made-up objectives of a plan of the default global space (accuracy, size, latency,
    energy): monotone in how much the plan compresses, with noise, as measured ones are."""
    width = float(params.get("student_width", 1.0))
    prune = float(params.get("prune_ratio", 0.0))
    rank = float(params.get("rank_ratio", 1.0))
    bits = float(params.get("weight_bits", 32))
    keep = width**2 * (1 - prune) * rank
    size = keep * bits / 32 * (1 + 0.05 * rng.standard_normal())
    acc = 99 - 20 * (1 - keep) ** 3 - (3 if bits <= 4 else 0) + rng.standard_normal()
    latency = (0.2 + 0.8 * keep) * (0.6 if bits <= 8 else 1) * (1 + 0.1 * rng.standard_normal())
    energy = latency * (1 + 0.05 * rng.standard_normal())
    return [acc, max(size, 1e-4), max(latency, 1e-3), max(energy, 1e-3)]


DIRECTIONS = ["maximize", "minimize", "minimize", "minimize"]


def synthetic_trials(n: int, seed: int) -> list[optuna.trial.FrozenTrial]:
    """``n`` complete trials of the default global space, plans drawn at random, made in memory
    through the search's own ``suggest_plan``."""
    from tradeoff.spaces import default_space, suggest_plan

    space = default_space()
    rng = np.random.default_rng(seed)
    memory = optuna.create_study(directions=DIRECTIONS, sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = memory.ask()
        suggest_plan(trial, space)
        values = figures(trial.params, rng)
        memory.tell(trial, values)
        out.append(
            optuna.trial.create_trial(params=trial.params, distributions=trial.distributions, values=values)
        )
    return out


class SqlClock:
    """Seconds SQLAlchemy spends executing statements on ``engine`` (sent, run, answered)."""

    def __init__(self, engine: sqlalchemy.Engine) -> None:
        self.total = 0.0
        self.statements = 0
        sqlalchemy.event.listen(engine, "before_cursor_execute", self._before)
        sqlalchemy.event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        conn.info["tradeoff_t0"] = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.total += time.perf_counter() - conn.info.pop("tradeoff_t0", time.perf_counter())
        self.statements += 1


def time_steps(url: str, sampler_name: str, repeats: int, seed: int) -> dict:
    """A long-lived worker's ask / propose / tell on the study at ``url``: ``repeats`` timed
    steps after one warm-up (which fills Optuna's trial cache, as a running worker has)."""
    from tradeoff.search.study.sampler import make_sampler
    from tradeoff.spaces import default_space, suggest_plan
    from tradeoff.storage import open_storage

    storage = open_storage(url, heartbeat_interval=None)
    clock = SqlClock(storage.engine)
    if sampler_name == "tpe-uncapped":
        sampler = optuna.samplers.TPESampler(
            multivariate=True, constant_liar=True, n_startup_trials=5, seed=seed
        )
    else:
        sampler = make_sampler(sampler_name, seed=seed, population=50)
    study = optuna.load_study(study_name="scale", storage=storage, sampler=sampler)
    space, rng = default_space(), np.random.default_rng(seed)
    rows = []
    for i in range(repeats + 1):
        sql0, t0 = clock.total, time.perf_counter()
        trial = study.ask()
        t1 = time.perf_counter()
        suggest_plan(trial, space)
        t2 = time.perf_counter()
        study.tell(trial, figures(trial.params, rng))
        t3 = time.perf_counter()
        if i:
            rows.append((t1 - t0, t2 - t1, t3 - t2, t3 - t0, clock.total - sql0))
    med = [statistics.median(col) * 1e3 for col in zip(*rows)]
    return dict(zip(("ask_ms", "propose_ms", "tell_ms", "total_ms", "sql_ms"), med)) | {
        "total_p90_ms": float(np.percentile([r[3] for r in rows], 90) * 1e3)
    }


def run_ask(args) -> dict:
    from tradeoff.storage import open_storage

    sizes = (50, 100) if args.quick else tuple(args.sizes)
    repeats = 5 if args.quick else args.repeats
    url, drop = pg_database()
    out = {"machine": machine(), "repeats": repeats, "rows": []}
    try:
        storage = open_storage(url, heartbeat_interval=None)
        study = optuna.create_study(study_name="scale", storage=storage, directions=DIRECTIONS)
        pool = synthetic_trials(sizes[-1], seed=0)
        have = 0
        for size in sizes:
            t0 = time.perf_counter()
            for t in pool[have:size]:
                study.add_trial(t)
            have = size
            # the timed steps add trials too: count what is there
            n = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
            print(f"study at {n} complete trials (added in {time.perf_counter() - t0:.0f} s)", flush=True)
            for name in ("auto", "random") if args.quick else args.samplers:
                if name == "gp" and size > GP_MAX:
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    reps = min(repeats, 5) if name == "gp" else repeats
                    row = {
                        "size": n,
                        "sampler": name,
                        "repeats": reps,
                        **time_steps(url, name, reps, seed=size),
                    }
                out["rows"].append(row)
                print(json.dumps(row), flush=True)
    finally:
        drop()
    return out


# ---------------------------------------------------------------------------------------- fleet


def suggest_default(trial: optuna.Trial) -> None:
    """The default global space's four values, suggested as ``suggest_plan`` suggests them, without
    importing torch (64 workers that each import torch would not fit in 24 GiB)."""
    trial.suggest_float("student_width", 0.25, 1.0, step=0.125)
    trial.suggest_float("prune_ratio", 0.0, 0.8, step=0.05)
    trial.suggest_float("rank_ratio", 0.1, 1.0, step=0.05)
    trial.suggest_categorical("weight_bits", [32, 8, 4, 2])


def _fleet_worker(url: str, sleep_s: float, start_at: float, stop_at: float, out: mp.Queue) -> None:
    from tradeoff.search.study import worker as w
    from tradeoff.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    storage = open_storage(url, heartbeat_interval=30)
    from tradeoff.search.study.sampler import make_sampler, sampler_seed

    sampler = make_sampler("auto", seed=sampler_seed(0, 0, w.worker_id()))
    study = optuna.load_study(study_name="fleet", storage=storage, sampler=sampler)
    rng = np.random.default_rng(os.getpid())
    held: list[float] = []
    lock = storage.lock

    def timed_lock(name):
        import contextlib

        @contextlib.contextmanager
        def cm():
            with lock(name):
                t0 = time.perf_counter()
                try:
                    yield
                finally:
                    held.append(time.perf_counter() - t0)

        return cm()

    storage.lock = timed_lock
    done: list[float] = []
    stopper = w.Stopper()

    def objective(trial: optuna.Trial) -> list[float]:
        suggest_default(trial)
        time.sleep(sleep_s)
        return figures(trial.params, rng)

    def on_trial(_t) -> None:
        done.append(time.time())
        if time.time() >= stop_at:
            stopper.requested = True

    def before() -> None:
        if time.time() >= stop_at:
            raise KeyboardInterrupt

    time.sleep(max(0.0, start_at - time.time()))
    try:
        w.run_worker(
            study,
            storage,
            objective,
            propose=suggest_default,  # under the lock, as the search command proposes
            budget=None,
            stopper=stopper,
            on_trial=on_trial,
            poll_s=0.5,
        )
    except KeyboardInterrupt:
        pass
    out.put({"done": done, "held": held})


def proxy_server(url: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradeoff.search.cli", "proxy", "--storage", url, "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    target = f"grpc://127.0.0.1:{port}"
    from tradeoff.storage import open_storage

    deadline = time.time() + 120
    while True:
        try:
            open_storage(target, heartbeat_interval=None).get_all_studies()
            return proc, target
        except Exception:
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit(
                    f"the proxy did not start: {proc.stderr.read() if proc.poll() is not None else ''}"
                ) from None
            time.sleep(0.5)


def fleet(url: str, workers: int, sleep_s: float, window_s: float, startup_s: float) -> dict:
    from tradeoff.storage import open_storage

    optuna.create_study(
        study_name="fleet", storage=open_storage(url, heartbeat_interval=None), directions=DIRECTIONS
    )
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    start_at = time.time() + startup_s
    # the window opens one sleep after the start (every worker is then in its steady loop)
    open_at, stop_at = start_at + sleep_s, start_at + sleep_s + window_s
    procs = [
        ctx.Process(target=_fleet_worker, args=(url, sleep_s, start_at, stop_at, q)) for _ in range(workers)
    ]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    done = [t for r in results for t in r["done"] if open_at <= t < stop_at]
    held = [h for r in results for h in r["held"]]
    late = time.time() - start_at
    rate = len(done) / window_s
    return {
        "workers": workers,
        "trials_per_s": rate,
        "ideal_per_s": workers / sleep_s,
        "fraction_of_ideal": rate / (workers / sleep_s),
        "lock_held_median_ms": statistics.median(held) * 1e3 if held else None,
        "lock_held_p90_ms": float(np.percentile(held, 90) * 1e3) if held else None,
        "wall_s": late,
    }


def run_fleet(args) -> dict:
    counts = (2,) if args.quick else tuple(args.workers)
    window = 12.0 if args.quick else args.window_s
    sleep_s = 2.0 if args.quick else args.sleep_s
    out = {"machine": machine(), "sleep_s": sleep_s, "window_s": window, "rows": []}
    for mode in ("direct", "proxy"):
        for n in counts:
            url, drop = pg_database()
            proc = None
            try:
                target = url
                if mode == "proxy":
                    proc, target = proxy_server(url)
                # spawned workers import Optuna and SQLAlchemy; give them time to start before the clock runs
                startup = (10 if args.quick else 20) + 1.5 * n
                row = {"mode": mode, **fleet(target, n, sleep_s, window, startup_s=startup)}
            finally:
                if proc is not None:
                    proc.terminate()
                    proc.wait()
                drop()
            out["rows"].append(row)
            print(json.dumps(row), flush=True)
    return out


def markdown(part: str, result: dict) -> str:
    """The part's table as BENCHMARKS.md quotes it."""
    lines = [f"Machine: {result['machine']}."]
    if part == "ask":
        lines += [
            "",
            "| complete trials | sampler | ask | proposal | tell | ask + tell + proposal (median) | 90th pct | SQL of it |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in result["rows"]:
            lines.append(
                f"| {r['size']:,} | {r['sampler']} | {r['ask_ms']:.0f} ms | {r['propose_ms']:.0f} ms | "
                f"{r['tell_ms']:.0f} ms | **{r['total_ms']:.0f} ms** | {r['total_p90_ms']:.0f} ms | {r['sql_ms']:.0f} ms |"
            )
    else:
        lines += [
            f"Sleep objective {result['sleep_s']:g} s, window {result['window_s']:g} s.",
            "",
            "| storage | workers | trials/s | ideal | of ideal | study lock held (median, p90) |",
            "|---|---|---|---|---|---|",
        ]
        for r in result["rows"]:
            held = (
                f"{r['lock_held_median_ms']:.0f} ms, {r['lock_held_p90_ms']:.0f} ms"
                if r["lock_held_median_ms"] is not None
                else "-"
            )
            lines.append(
                f"| {r['mode']} | {r['workers']} | {r['trials_per_s']:.2f} | {r['ideal_per_s']:.2f} | "
                f"**{100 * r['fraction_of_ideal']:.0f} %** | {held} |"
            )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parts", nargs="+", choices=("ask", "fleet", "tables"))
    ap.add_argument("--quick", action="store_true", help="small studies and short windows: a smoke run")
    ap.add_argument("--repeats", type=int, default=20, help="timed steps per size and sampler")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="study sizes for `ask`")
    ap.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS, help="for `ask`")
    ap.add_argument("--workers", type=int, nargs="+", default=list(WORKERS))
    ap.add_argument("--sleep-s", type=float, default=10.0)
    ap.add_argument("--window-s", type=float, default=60.0)
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    os.makedirs(RESULTS, exist_ok=True)
    for part in args.parts:
        if part == "tables":  # the tables of the last full runs, from benchmarks/results/
            for name in sorted(os.listdir(RESULTS)):
                if name.startswith("scale-") and name.endswith(".json"):
                    with open(os.path.join(RESULTS, name)) as f:
                        print(f"{name}\n\n{markdown(name.split('-')[1].split('.')[0], json.load(f))}\n")
            continue
        result = run_ask(args) if part == "ask" else run_fleet(args)
        print(markdown(part, result))
        if not args.quick:
            given = args.workers if part == "fleet" else args.sizes
            default = WORKERS if part == "fleet" else SIZES
            suffix = "" if tuple(given) == default else "-" + "-".join(map(str, given))
            with open(os.path.join(RESULTS, f"scale-{part}{suffix}.json"), "w") as f:
                json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
