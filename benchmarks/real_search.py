"""The default search against random search on the real bundled task: hypervolume of real trials.

    python benchmarks/real_search.py                       # 3 seeds x 40 plans, auto vs random (~40 min)
    python benchmarks/real_search.py --seeds 0 --n-trials 12 --out /tmp/r.md   # a short check

For each seed: `tradeoff search --n-trials 1` trains and caches that seed's teacher (the seed
also draws the data split), then one `tradeoff search --seed S --sampler X --n-trials N` per
sampler runs *at the same time*, each on one thread (`--threads 1`) in a study of its own, so
that both see the same machine load. The hypervolume is `samplers.py`'s, computed on the
measured plans of each study against one baseline per seed: each study measures the baseline
(trial 0) once, and a single batch-1 latency of it varies by more than the samplers differ
(8.4 ms and 14.6 ms in two studies started together), so the seed's reference latency is the
geometric mean of its studies' baseline latencies (accuracy, size and energy of the baseline
are the same in both). `--report DIR` recomputes the table from the studies of an earlier run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import optuna
from samplers import OBJECTIVES, hypervolume, normalise

from tradeoff.search.study.records import BASELINE_ATTR, DUPLICATE_ATTR
from tradeoff.search.trial.measure import cpu_name
from tradeoff.storage import open_storage

HERE = os.path.dirname(os.path.abspath(__file__))


def tradeoff(args: list[str], cwd: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tradeoff.search.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )


def load(directory: str) -> optuna.Study:
    url = f"sqlite:///{os.path.join(directory, 'tradeoff.db')}"
    return optuna.load_study(study_name="tradeoff", storage=open_storage(url, heartbeat_interval=None))


def common_baseline(studies: list[optuna.Study]) -> dict:
    """The baseline figures of the studies of one seed, latency as the geometric mean of theirs."""
    bases = [s.user_attrs[BASELINE_ATTR] for s in studies]
    base = dict(bases[0])
    for name in OBJECTIVES[1:]:
        base[name] = statistics.geometric_mean([b[name] for b in bases])
    return base


def study_hypervolume(study: optuna.Study, base: dict) -> tuple[float, int, float]:
    """(hypervolume of the measured plans against ``base``, how many, median trial seconds)."""
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if DUPLICATE_ATTR not in t.user_attrs
    ]
    points = [normalise({o: t.user_attrs[o] for o in OBJECTIVES}, base) for t in done]
    seconds = [t.duration.total_seconds() for t in done if t.duration]
    return hypervolume(points), len(done), statistics.median(seconds)


def run_seed(seed: int, a: argparse.Namespace, work: str) -> None:
    warm = tradeoff(["search", "--n-trials", "1", "--seed", str(seed), "--study-name", f"warm{seed}"], work)
    out, _ = warm.communicate()
    if warm.returncode:
        sys.exit(out)
    procs = []
    for s in a.samplers:
        d = os.path.join(work, f"{s}-{seed}")
        os.makedirs(d)
        args = [
            "search",
            "--seed",
            str(seed),
            "--sampler",
            s,
            "--n-trials",
            str(a.n_trials),
            "--threads",
            "1",
        ]
        procs.append(tradeoff(args, d))
    for p in procs:
        out, _ = p.communicate()
        if p.returncode:
            sys.exit(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n-trials", type=int, default=40)
    ap.add_argument("--samplers", nargs="+", default=["auto", "random"])
    ap.add_argument("--out", default=os.path.join(HERE, "results", "real_search.md"))
    ap.add_argument("--report", metavar="DIR", help="only recompute the table from the studies in DIR")
    a = ap.parse_args()
    work = a.report or tempfile.mkdtemp(prefix="tradeoff-real-search-")
    results: dict[str, list[float]] = {s: [] for s in a.samplers}
    rows = []
    t0 = time.perf_counter()
    for seed in a.seeds:
        if not a.report:
            run_seed(seed, a, work)
        studies = {s: load(os.path.join(work, f"{s}-{seed}")) for s in a.samplers}
        base = common_baseline(list(studies.values()))
        for s, study in studies.items():
            hv, n, median_s = study_hypervolume(study, base)
            results[s].append(hv)
            own = study.user_attrs[BASELINE_ATTR]["latency_ms"]
            rows.append(
                f"| {seed} | {s} | {hv:.2f} | {n} | {median_s:.1f} | {own:.2f} / {base['latency_ms']:.2f} |"
            )
            print(f"seed {seed}: {s} hypervolume {hv:.2f} over {n} plans", file=sys.stderr, flush=True)
    took = (
        f"{time.perf_counter() - t0:.0f} s in all" if not a.report else "figures recomputed from its studies"
    )
    lines = [
        f"`python benchmarks/real_search.py --seeds {' '.join(map(str, a.seeds))} --n-trials {a.n_trials}` on "
        f"{cpu_name()}, {os.cpu_count()} cores, the searches of one seed side by side on one thread each; "
        f"{took}.",
        "",
        "| seed | sampler | hypervolume | measured plans | median trial s | baseline ms: own / reference |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
    ]
    ref = a.samplers[-1]
    for s in a.samplers:
        med = statistics.median(results[s])
        ratio = f", {med / statistics.median(results[ref]):.2f}x {ref}" if s != ref and results[ref] else ""
        lines.append(
            f"- {s}: median hypervolume {med:.2f} (seeds: {', '.join(f'{v:.2f}' for v in results[s])}){ratio}"
        )
    text = "\n".join(lines)
    print(text)
    with open(a.out, "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
