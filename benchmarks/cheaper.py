"""Cheaper trials: the default search with and without them, on the same wall-clock budget.

    python benchmarks/cheaper.py --minutes 15 --out benchmarks/results/cheaper.md
    python benchmarks/cheaper.py --quick       # tiny_resnet, half a minute per arm: a smoke run
    python benchmarks/cheaper.py --task fashion-mnist --minutes 30 --dir DIR   # the real task (~70 min)

Two runs of `tradeoff search` on the bundled task (resnet18 teacher, seed 0, one study each, the
teacher trained once before both), one after the other on the same machine, each stopped
``--minutes`` after its first trial started (SIGINT: the running trial finishes; trials that
end after the budget are not counted):

- ``before``: ``--no-reuse --no-early-stop --keep-models none``: every plan fine-tuned from
  the teacher, every fine-tune finished, nothing kept (what the search did before; it still
  records the checkpoint accuracies, two evaluations of the validation split per fine-tune);
- ``after``: the defaults: float models reused per structure with the other bit-widths of a new
  structure queued, hopeless fine-tunes stopped, constraints checked before training (this
  benchmark sets none), the front's weights kept.

The latency in the hypervolume is each trial's paired ratio to the baseline (timed interleaved
with it) where it recorded one: the arms run one after the other under different loads. (The
digits figures in BENCHMARKS.md were computed from milliseconds before trials recorded it.)

Reported: measured plans (complete, not repeats) per hour and the ratio, with the spread of
that ratio over the budget's quarters; the front's hypervolume (accuracy drop in points, log10
size and latency ratios to the baseline; reference point 10 points, 1x, 1x) at each quarter;
how the stopping rule would have judged the ``before`` run's plans (each at its own checkpoints,
against the trials finished before it started, with its own final figures as the untrained
ones): how many it would have stopped and how many of those ended on that run's front; and
`tradeoff export` of a front trial of each run, timed.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import optuna
import torch
from optuna._hypervolume import compute_hypervolume

from tradeoff.search.study.records import (
    CURVE_ATTR,
    DUPLICATE_ATTR,
    REUSED_ATTR,
    ROLE_ATTR,
    SIBLING_ROLE,
    STOPPED_ATTR,
    baseline_of,
)
from tradeoff.search.trial.measure import cpu_name
from tradeoff.search.trial.stopping import judge
from tradeoff.search.views.report import front

OBJECTIVES = ("accuracy", "size_bytes", "latency_ms")
REFERENCE = np.array([10.0, 0.0, 0.0])
ARMS = {
    "before": ["--no-reuse", "--no-early-stop", "--keep-models", "none"],
    "after": [],
}
QUICK = [
    "--model",
    "tiny_resnet",
    "--finetune-steps",
    "30",
    "--student-steps",
    "60",
    "--latency-repeats",
    "5",
]


def tradeoff(*args: str) -> list[str]:
    return [sys.executable, "-m", "tradeoff.search.cli", *args]


def run_arm(name: str, extra: list[str], minutes: float, cwd: str, env: dict, base: list[str]) -> float:
    """Run one arm until ``minutes`` after its first trial started; returns that start (epoch s)."""
    cmd = [*tradeoff(), "search", "--study-name", name, "--n-trials", "100000", *base, *extra]
    print(f"== {name}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    log = open(os.path.join(cwd, f"{name}.log"), "w")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stderr=log, stdout=log)
    url = f"sqlite:///{os.path.join(cwd, 'tradeoff.db')}"
    start = None
    while proc.poll() is None:
        time.sleep(2)
        if start is None:
            try:
                study = optuna.load_study(study_name=name, storage=url)
                started = [t.datetime_start for t in study.trials if t.datetime_start]
                start = min(started).timestamp() if started else None
            except Exception:  # noqa: BLE001 - the study is not created yet
                pass
        elif time.time() > start + 60 * minutes:
            proc.send_signal(signal.SIGINT)  # the running trial finishes, then the worker stops
            proc.wait()
    log.close()
    if start is None:
        raise SystemExit(f"{name}: no trial started; see {cwd}/{name}.log")
    return start


def normalised(t, base) -> np.ndarray:
    """Accuracy drop in points, log10 size and latency ratios to the baseline; the latency ratio
    is the trial's paired one (timed interleaved with the baseline) where it recorded one, since
    the arms run one after the other under different loads."""
    ratio = t.user_attrs.get("latency_ratio") or t.user_attrs["latency_ms"] / base["latency_ms"]
    return np.array(
        [
            100.0 * (base["accuracy"] - t.user_attrs["accuracy"]),
            math.log10(t.user_attrs["size_bytes"] / base["size_bytes"]),
            math.log10(ratio),
        ]
    )


def hypervolume(trials, base) -> float:
    pts = [normalised(t, base) for t in trials]
    inside = [p for p in pts if np.all(p < REFERENCE)]
    if not inside:
        return 0.0
    return float(compute_hypervolume(np.array(inside), REFERENCE, assume_pareto=False))


def measured(study, until: float):
    return [
        t
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE
        and DUPLICATE_ATTR not in t.user_attrs
        and t.datetime_complete.timestamp() <= until
    ]


def shadow_stops(study) -> tuple[int, int, list[str]]:
    """The stopping rule replayed on a run that did not stop: (would stop, of those on the
    run's final front, their lines). Each plan is judged alone (that run queued no other
    bit-widths): a looser rule than the search's, which also needs every queued bit-width of the
    structure beaten, so the search stops at most these."""
    done = [
        t
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE and DUPLICATE_ATTR not in t.user_attrs
    ]
    on_front = {t.number for t in front(study)}
    stops, lines = [], []
    for t in done:
        curve = t.user_attrs.get(CURVE_ATTR)
        if not curve:
            continue
        before = [u for u in done if u.datetime_complete < t.datetime_start]
        figures = {o: t.user_attrs[o] for o in OBJECTIVES if o != "accuracy"}
        for fraction, acc in curve["points"]:
            reason = judge(
                before,
                OBJECTIVES,
                lambda figures=figures: [figures],
                fraction=fraction,
                accuracy=acc,
                from_scratch=curve["from_scratch"],
            )
            if reason:
                stops.append(t)
                where = "on the final front" if t.number in on_front else "off the front"
                lines.append(
                    f"#{t.number} at {fraction:.0%} ({100 * acc:.1f} %), ended at "
                    f"{100 * t.user_attrs['accuracy']:.2f} %, {where}"
                )
                break
    return len(stops), sum(t.number in on_front for t in stops), lines


DIGITS_VARIANT_COST = 0.15  # a variant against a fine-tuned plan in the digits `after` run


def replay_siblings(
    seeds: int, costs=(10, 20, 40), task: str | None = None, variant_cost: float = DIGITS_VARIANT_COST
) -> list[str]:
    """The product's sampler replayed on the tabular benchmark (benchmarks/samplers.py's problems)
    with and without the queued bit-width variants, at equal cost: a fine-tuned plan costs 1, a
    variant ``variant_cost`` (its quantization and measurement against a fine-tuned plan's, from
    the live `after` run: see `variant_cost`). Hypervolume medians and IQR. ``task``: where that
    task's measured table exists (fashion-mnist), it is replayed first."""
    import warnings

    import samplers as S  # beside this script
    import tabular

    from tradeoff.search.study.config import SearchConfig
    from tradeoff.spaces import post_training_siblings, suggest_plan

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = SearchConfig().validated(n_trials=40).space
    digits = tabular.load()
    problems = [("digits (measured table)", digits, False), ("steep (synthetic)", digits, True)]
    own = tabular.table_path(task, "global") if task else None
    if own and os.path.exists(own):
        problems.insert(0, (f"{task} (measured table)", tabular.load(own), False))

    def run(problem, seed, budget, variants):
        sampler, enqueued = S.CANDIDATES["tradeoff"][0](space, seed, 40)
        study = optuna.create_study(
            directions=["maximize", "minimize", "minimize", "minimize"], sampler=sampler
        )
        for params in enqueued:
            study.enqueue_trial(params, skip_if_exists=True)
        seen, structures, cost, points = {}, set(), 0.0, []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            while cost < budget:
                trial = study.ask()
                plan = suggest_plan(trial, space)
                key = S.pkey(plan.params())
                if key in seen:
                    study.tell(trial, seen[key])
                    continue
                f = problem.figures[key]
                seen[key] = [f[o] for o in S.OBJECTIVES]
                cost += variant_cost if key[:3] in structures else 1.0
                if variants and key[:3] not in structures:
                    for sibling in post_training_siblings(plan, space):
                        study.enqueue_trial(sibling.params())
                structures.add(key[:3])
                points.append(problem.normalised(f))
                study.tell(trial, seen[key])
        return S.hypervolume(points), len(points)

    lines = [
        "| problem | cost (fine-tunes) | without variants: hypervolume [IQR], plans | with variants: hypervolume [IQR], plans |",
        "|---|---|---|---|",
    ]
    for name, table, steep in problems:
        problem = S.Problem(name, table, space, steep=steep)
        for budget in costs:
            cells = []
            for variants in (False, True):
                got = [run(problem, seed, budget, variants) for seed in range(seeds)]
                hv = sorted(h for h, _ in got)
                q1, med, q3 = np.percentile(hv, [25, 50, 75])
                cells.append(f"{med:.2f} [{q1:.2f}, {q3:.2f}], {statistics.median(n for _, n in got):.0f}")
            lines.append(f"| {name} | {budget} | {cells[0]} | {cells[1]} |")
    return lines


def variant_cost(study) -> float:
    """What a queued bit-width variant costs against a fine-tuned plan in ``study`` (the `after`
    arm): the ratio of their median trial times; 0.15 (digits' live figure) where either is
    missing."""
    variants, fine_tuned = [], []
    for t in study.trials:
        if t.state != optuna.trial.TrialState.COMPLETE or "time_total_s" not in t.user_attrs:
            continue
        if t.user_attrs.get(ROLE_ATTR) == SIBLING_ROLE:
            variants.append(t.user_attrs["time_total_s"])
        elif REUSED_ATTR not in t.user_attrs:  # a plan whose float model was fine-tuned for it
            fine_tuned.append(t.user_attrs["time_total_s"])
    if not variants or not fine_tuned:
        return DIGITS_VARIANT_COST
    return statistics.median(variants) / statistics.median(fine_tuned)


def time_export(name: str, cwd: str, env: dict, study) -> tuple[float, str, int]:
    chosen = min(
        front(study),
        key=lambda t: t.user_attrs["size_bytes"] if t.params.get("weight_bits", 32) < 32 else math.inf,
    )
    out = os.path.join(cwd, f"export-{name}")
    cmd = [
        *tradeoff(),
        "export",
        "--study-name",
        name,
        "--trial",
        str(chosen.number),
        "--output",
        out,
        "--force",
    ]
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if r.returncode:
        raise SystemExit(f"export of {name} #{chosen.number} failed: {r.stderr.strip().splitlines()[-1]}")
    import json

    record = json.load(open(os.path.join(out, "record.json")))
    return seconds, record.get("weights_from", ""), chosen.number


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--task", help="the bundled task (default: digits)")
    ap.add_argument("--out")
    ap.add_argument("--dir", help="scratch directory (kept; default: a temporary one)")
    ap.add_argument("--seeds", type=int, default=8, help="seeds of the equal-cost replay")
    ap.add_argument("--report-only", action="store_true", help="run no arm: report on the studies in --dir")
    ap.add_argument(
        "--only",
        nargs="*",
        choices=list(ARMS),
        help="run only these arms; the others are read from the studies of an earlier run in --dir",
    )
    a = ap.parse_args()
    minutes = 0.5 if a.quick else a.minutes
    base = (QUICK if a.quick else []) + (["--task", a.task] if a.task else [])
    cwd = a.dir or tempfile.mkdtemp(prefix="tradeoff-cheaper-")
    os.makedirs(cwd, exist_ok=True)
    env = dict(os.environ)
    from tradeoff.search.task.teacher import cache_dir

    env.setdefault("TRADEOFF_CACHE", cache_dir())
    # the teacher, trained once before both arms (a one-trial study), so neither arm pays for it
    subprocess.run(  # (resumes, and adds a trial, when --dir holds an earlier run)
        ["true"]
        if a.report_only
        else [*tradeoff(), "search", "--study-name", "teacher", "--n-trials", "1", *base],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
    )
    url = f"sqlite:///{os.path.join(cwd, 'tradeoff.db')}"
    starts, studies = {}, {}
    for name, extra in ARMS.items():
        if (a.only is not None and name not in a.only) or a.report_only:  # kept from a run in --dir
            studies[name] = optuna.load_study(study_name=name, storage=url)
            starts[name] = min(t.datetime_start for t in studies[name].trials if t.datetime_start).timestamp()
            continue
        if name in optuna.get_all_study_names(url):
            optuna.delete_study(study_name=name, storage=url)
        starts[name] = run_arm(name, extra, minutes, cwd, env, base)
        studies[name] = optuna.load_study(study_name=name, storage=url)
    quarters = [minutes * q / 4 for q in (1, 2, 3, 4)]
    rows, per_quarter, ran, per_hour = [], {}, {}, {}
    for name, study in studies.items():
        b = baseline_of(study)
        ended = max(t.datetime_complete.timestamp() for t in study.trials if t.datetime_complete)
        ran[name] = min(minutes, (ended - starts[name]) / 60)  # a search that converged stops early
        ends = [measured(study, starts[name] + 60 * m) for m in quarters]
        counts = [len(e) for e in ends]
        per_quarter[name] = [c - p for c, p in zip(counts, [0] + counts[:-1])]
        final = ends[-1]
        pruned = [
            t
            for t in study.trials
            if t.state == optuna.trial.TrialState.PRUNED
            and DUPLICATE_ATTR not in t.user_attrs
            and t.datetime_complete
            and t.datetime_complete.timestamp() <= starts[name] + 60 * minutes
        ]
        stopped = [
            t for t in pruned if (t.user_attrs.get(STOPPED_ATTR) or {}).get("when") == "during fine-tuning"
        ]
        siblings = [t for t in final if t.user_attrs.get(ROLE_ATTR) == SIBLING_ROLE]
        reused = [t for t in final if "reused_float" in t.user_attrs]
        trial_s = [t.user_attrs.get("time_total_s", 0) for t in final]
        per_hour[name] = len(final) * 60 / ran[name]
        rows.append(
            f"| {name} | {len(final)} | {ran[name]:.1f} | {per_hour[name]:.0f} | {len(siblings)} | {len(reused)} | "
            f"{len(stopped)} | {statistics.median(trial_s):.1f} | "
            + " | ".join(
                f"{hypervolume([t for t in e if t.user_attrs.get('accuracy') is not None], b):.2f}"
                for e in ends
            )
            + " |"
        )
    # quarters both arms ran to the end of (a converged search stops before its budget)
    full = [i for i, m in enumerate(quarters) if all(ran[n] >= m - 0.05 for n in studies)]
    ratios = [per_quarter["after"][i] / per_quarter["before"][i] for i in full if per_quarter["before"][i]]
    total = {n: sum(q) for n, q in per_quarter.items()}
    n_stop, n_front, stop_lines = shadow_stops(studies["before"])
    exports = {n: time_export(n, cwd, env, s) for n, s in studies.items()}
    threads = next(
        (
            t.user_attrs.get("latency_threads")
            for t in studies["after"].trials
            if t.user_attrs.get("latency_threads")
        ),
        "?",
    )
    q = sorted(ratios)
    lines = [
        f"Command: `python benchmarks/cheaper.py --minutes {minutes:g}{' --quick' if a.quick else ''}"
        + (f" --task {a.task}`" if a.task else "`"),
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, optuna {optuna.__version__}; "
        f"latency threads {threads}. One run per arm, seed 0, {minutes:g} minutes each from its first trial's start.",
        "",
        "| arm | measured plans | minutes run | per hour run | of them other bit-widths | float model reused | fine-tunes stopped | median trial s | "
        + " | ".join(f"hypervolume at {m:g} min" for m in quarters)
        + " |",
        "|---|---|---|---|---|---|---|---|" + "---|" * len(quarters),
        *rows,
        "",
        f"Each arm ran {', '.join(f'`{n}` {ran[n]:.1f} min' for n in studies)} of its {minutes:g} (a search stops "
        "by itself after 25 proposals in a row of plans it already measured: converged).",
        "",
        f"Measured plans per hour, after / before: **{per_hour['after'] / per_hour['before']:.2f}x** over the time "
        f"each ran ({total['after'] / max(1, total['before']):.2f}x the plans in the same {minutes:g}-minute budget); "
        f"per quarter of the budget that both ran to its end {', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(q) if q else float('nan'):.2f}, "
        f"range {q[0] if q else float('nan'):.2f}-{q[-1] if q else float('nan'):.2f}).",
        "",
        f"The stopping rule replayed on the `before` run (which finished every fine-tune): it would have stopped "
        f"{n_stop} plans, {n_front} of which ended on that run's final front.",
        *(f"- {line}" for line in stop_lines),
        "",
        "`tradeoff export` of a front trial (the smallest quantized one), wall time including interpreter start:",
        *(f"- {n}: #{e[2]} in {e[0]:.1f} s, from {e[1]}" for n, e in exports.items()),
    ]
    cost = variant_cost(studies["after"])
    lines += [
        "",
        f"Equal-cost replay of the product's sampler on the tabular benchmark ({2 if a.quick else a.seeds} seeds; a "
        f"queued bit-width variant costs {cost:.3f} of a fine-tuned plan, the ratio of the `after` arm's "
        "median trial times, variants against plans fine-tuned for themselves):",
        "",
        *replay_siblings(
            2 if a.quick else a.seeds,
            costs=(10, 20) if a.quick else (10, 20, 40),
            task=a.task,
            variant_cost=cost,
        ),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
