"""Per-layer allocation against one value per knob: the same search, budget and seeds.

    python benchmarks/allocation.py --out benchmarks/results/allocation.md     # 3 seeds x 40 plans
    python benchmarks/allocation.py --quick                                   # tiny_resnet smoke run

For each seed, two runs of `tradeoff search` on the bundled task (resnet18 teacher, trained once
before all runs), one after the other on the same machine: ``--granularity global`` (one value
per knob) and ``--granularity allocated`` (per technique a budget and one allocation sharpness,
made per-layer values by the study's measured sensitivity table), each with ``--n-trials 40``
(plans that fine-tune; the bit-width variants of a trained structure are extra in both, as the
product runs them) and everything else at its default.

Reported per seed: the front's hypervolume computed the way ``benchmarks/cheaper.py`` and
``benchmarks/samplers.py`` compute it (accuracy drop in points, log10 size and latency ratios to
the baseline; reference point 10 points, 1x, 1x; Optuna's WFG), the ratio allocated / global,
and their median over the seeds; the plans measured and the minutes each run took; the cost of
the sensitivity pass; both fronts; and the check of the issue: the allocated front's
mixed-precision plans that are smaller than the best uniform 4-bit plan of either run at equal
or better accuracy.
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
import torch
from cheaper import QUICK, hypervolume, tradeoff  # beside this script

from tradeoff.search.study.records import DUPLICATE_ATTR, PLAN_ATTR, SENSITIVITY_ATTR, baseline_of
from tradeoff.search.trial.measure import cpu_name
from tradeoff.search.views.report import front
from tradeoff.spaces import Plan, format_plan

ARMS = ("global", "allocated")


def run(name: str, granularity: str, seed: int, cwd: str, env: dict, base: list[str], n: int) -> float:
    cmd = [
        *tradeoff(),
        "search",
        "--study-name",
        name,
        "--n-trials",
        str(n),
        "--seed",
        str(seed),
        "--granularity",
        granularity,
        *base,
    ]
    print(f"== {name}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    t = time.perf_counter()
    with open(os.path.join(cwd, f"{name}.log"), "w") as log:
        subprocess.run(cmd, cwd=cwd, env=env, stdout=log, stderr=log, check=True)
    return time.perf_counter() - t


def finished(cwd: str, name: str, n: int) -> bool:
    """Whether ``name`` already holds ``n`` budgeted plans (a run that ended)."""
    from tradeoff.search.study.worker import counts

    try:
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{os.path.join(cwd, 'tradeoff.db')}")
    except KeyError:
        return False
    return counts(study)[0] >= n


def span(study):
    """(first trial's start, last trial's end): teacher training and the sensitivity pass run
    before the first trial and are not counted."""
    done = [t for t in study.trials if t.datetime_start and t.datetime_complete]
    if not done:
        return None, None
    return min(t.datetime_start for t in done), max(t.datetime_complete for t in done)


def minutes(study) -> float:
    start, end = span(study)
    return (end - start).total_seconds() / 60 if start else 0.0


def complete(study) -> list:
    return [
        t
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE and DUPLICATE_ATTR not in t.user_attrs
    ]


def uniform_bits(t) -> int | None:
    bits = Plan.from_params(t.user_attrs[PLAN_ATTR]).weight_bits
    if isinstance(bits, dict):
        values = {v for g, v in bits.items() if g != "*"} or set(bits.values())
        return next(iter(values)) if len(values) == 1 else None
    return bits


def mixed(t) -> bool:
    return uniform_bits(t) is None


def front_lines(study, base) -> list[str]:
    lines = ["| trial | accuracy | size (kB) | latency (ms) | plan |", "|---|---|---|---|---|"]
    for t in sorted(front(study), key=lambda t: t.user_attrs["size_bytes"]):
        a = t.user_attrs
        lines.append(
            f"| #{t.number} | {a['accuracy']:.2%} ({100 * (a['accuracy'] - base['accuracy']):+.2f}) | "
            f"{a['size_bytes'] / 1e3:.1f} | {a['latency_ms']:.3f} | {format_plan(a[PLAN_ATTR])} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n-trials", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="tiny_resnet, short fine-tunes, 12 plans, 1 seed")
    ap.add_argument("--dir", help="work directory (kept; default: a temporary one)")
    ap.add_argument("--report-only", action="store_true", help="read the studies in --dir, run nothing")
    ap.add_argument("--only", choices=ARMS, help="run this arm alone (the other's studies in --dir are read)")
    ap.add_argument(
        "--skip-done", action="store_true", help="leave the runs whose study is complete in --dir"
    )
    ap.add_argument("--out", help="markdown file to write")
    args = ap.parse_args()
    base = list(QUICK) if args.quick else []
    seeds = 1 if args.quick else args.seeds
    n = 12 if args.quick else args.n_trials
    cwd = os.path.abspath(args.dir or tempfile.mkdtemp(prefix="tradeoff-allocation-"))
    os.makedirs(cwd, exist_ok=True)
    env = dict(os.environ, TRADEOFF_RUN_DIR=os.path.join(cwd, "run"))
    seconds: dict[str, float] = {}
    if not args.report_only:
        for seed in range(seeds):
            for arm in ARMS:
                name = f"{arm}-{seed}"
                if (args.only and arm != args.only) or (args.skip_done and finished(cwd, name, n)):
                    continue
                seconds[name] = run(name, arm, seed, cwd, env, base, n)
    url = f"sqlite:///{os.path.join(cwd, 'tradeoff.db')}"
    rows, ratios, checks, time_ratios = [], [], [], []
    fronts: list[str] = []
    for seed in range(seeds):
        studies = {arm: optuna.load_study(study_name=f"{arm}-{seed}", storage=url) for arm in ARMS}
        hv = {}
        for arm, study in studies.items():
            base_fig = baseline_of(study)
            hv[arm] = hypervolume(complete(study), base_fig)
        ratio = hv["allocated"] / hv["global"] if hv["global"] else float("inf")
        ratios.append(ratio)
        # the allocated run measures more bit-width variants per fine-tune: also compare at the
        # wall time the global run took
        alloc = studies["allocated"]
        g_start, g_end = span(studies["global"])
        cut = span(alloc)[0] + (g_end - g_start)
        in_time = [t for t in complete(alloc) if t.datetime_complete <= cut]
        hv_time = hypervolume(in_time, baseline_of(alloc))
        time_ratios.append(hv_time / hv["global"] if hv["global"] else float("inf"))
        sens = studies["allocated"].user_attrs.get(SENSITIVITY_ATTR, {})
        rows.append(
            f"| {seed} | {hv['global']:.2f} | {hv['allocated']:.2f} | {ratio:.3f} | "
            f"{hv_time:.2f} ({time_ratios[-1]:.3f}) | "
            f"{len(complete(studies['global']))} / {len(complete(studies['allocated']))} | "
            + f"{minutes(studies['global']):.1f} / {minutes(studies['allocated']):.1f} | "
            + f"{sens.get('seconds', 0):.0f} s ({sens.get('metric', '?')}) |"
        )
        # the check: the best uniform 4-bit plan (the smallest within 1 point of the
        # baseline's accuracy, on either front) against the allocated front's mixed-precision plans
        base_acc = baseline_of(studies["global"])["accuracy"]
        four = [
            (arm, t)
            for arm, s in studies.items()
            for t in front(s)
            if uniform_bits(t) == 4 and t.user_attrs["accuracy"] >= base_acc - 0.01
        ]
        best = min(four, key=lambda at: at[1].user_attrs["size_bytes"], default=None)
        if best is None:
            checks.append(
                f"- seed {seed}: no uniform 4-bit plan within 1 point of the baseline on either front"
            )
        else:
            best_arm, best4 = best
            b = best4.user_attrs
            wins = sorted(
                (
                    t
                    for t in front(studies["allocated"])
                    if mixed(t)
                    and t.user_attrs["size_bytes"] < b["size_bytes"]
                    and t.user_attrs["accuracy"] >= b["accuracy"]
                ),
                key=lambda t: t.user_attrs["size_bytes"],
            )
            checks.append(
                f"- seed {seed}: the smallest uniform 4-bit front plan within 1 point of the baseline is "
                f"#{best4.number} of the {best_arm} run ({b['accuracy']:.2%}, {b['size_bytes'] / 1e3:.1f} kB, "
                f"{format_plan(b[PLAN_ATTR])}); "
                + (
                    f"{len(wins)} mixed-precision plan(s) of the allocated front are smaller at equal or better "
                    f"accuracy, the smallest #{wins[0].number} ({wins[0].user_attrs['accuracy']:.2%}, "
                    f"{wins[0].user_attrs['size_bytes'] / 1e3:.1f} kB, "
                    f"{format_plan(wins[0].user_attrs[PLAN_ATTR])})"
                    if wins
                    else "no mixed-precision plan of the allocated front is smaller at equal or better accuracy"
                )
            )
        for arm, study in studies.items():
            fronts += ["", f"#### seed {seed}, {arm}: front", "", *front_lines(study, baseline_of(study))]
    lines = [
        f"### Allocated vs global: {seeds} seed(s), {n} plans each ({cpu_name()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, optuna {optuna.__version__})",
        "",
        f"`python benchmarks/allocation.py{' --quick' if args.quick else ''}`",
        "",
        "| seed | hypervolume global | hypervolume allocated | ratio | allocated at the global run's minutes "
        "(ratio) | plans measured (global / allocated) | "
        "minutes of trials (global / allocated) | sensitivity pass (metric) |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Median ratio over {seeds} seed(s): **{statistics.median(ratios):.3f}** (range {min(ratios):.3f}-"
        f"{max(ratios):.3f}); at the global run's wall time: **{statistics.median(time_ratios):.3f}** "
        f"(range {min(time_ratios):.3f}-{max(time_ratios):.3f}).",
        "",
        "Mixed precision against uniform 4-bit:",
        "",
        *checks,
        *fronts,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
