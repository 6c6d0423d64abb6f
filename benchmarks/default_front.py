"""The default search on the bundled task, end to end, and what its front holds.

    python benchmarks/default_front.py --n-trials 40 --out benchmarks/results/default_front.md

Runs `tradeoff search` (a fresh study, a fresh teacher cache so that teacher training is timed)
in a scratch directory, then reports: the machine, the teacher, trial times and where they go,
the Pareto front against the baseline, the best single-technique points, and the best plan that
is >= 8x smaller and >= 2x faster than the baseline within 1 point of its accuracy.
With --storage/--study-name it only reports on an existing study.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

import optuna
import torch

from tradeoff.search.measure import cpu_name
from tradeoff.search.records import TEACHER_ATTR
from tradeoff.search.report import _fmt, baseline_of, front
from tradeoff.spaces import KNOBS, Plan, format_plan
from tradeoff.storage import open_storage


def ratio(t, base, name) -> str:
    v, b = t.user_attrs[name], base[name]
    if name == "accuracy":
        return f"{100 * v:.2f}% ({100 * (v - b):+.2f})"
    return f"{_fmt(name, v)} (/{b / v:.1f})" if v else "0"


def plan_text(t) -> str:
    return format_plan(t.params)


def row(t, base) -> str:
    cells = [f"#{t.number}", plan_text(t)] + [
        ratio(t, base, n) for n in ("accuracy", "size_bytes", "latency_ms", "energy_mj")
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = "| trial | plan | accuracy (pts vs base) | size (/x smaller) | latency (/x faster) | energy (/x less) |\n|---|---|---|---|---|---|"


def report(study: optuna.Study, command: str) -> str:
    base = baseline_of(study)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    fresh = [t for t in done if "duplicate_of" not in t.user_attrs]
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    teacher = study.user_attrs.get(TEACHER_ATTR, {})
    lines = [
        f"Command: `{command}`",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, optuna {optuna.__version__}; "
        f"latency threads {done[0].user_attrs.get('latency_threads')}; energy: {done[0].user_attrs['energy_method'].split(':')[0]}.",
        "",
        f"Teacher ({teacher.get('model')}): validation accuracy {100 * teacher.get('val_accuracy', 0):.2f}%, "
        f"test accuracy {100 * teacher.get('test_accuracy', 0):.2f}%, trained in {teacher.get('train_seconds')} s.",
        "",
        f"Trials: {len(done)} complete ({len(done) - len(fresh)} of them repeated plans, reused), {len(failed)} failed.",
    ]
    if fresh:

        def med(key):
            return statistics.median(t.user_attrs.get(key, 0.0) for t in fresh)

        lines.append(
            f"Median trial wall time {med('time_total_s'):.1f} s: knob application {med('time_apply_s'):.1f} s, "
            f"fine-tuning/distillation {med('time_finetune_s'):.1f} s, measurement {med('time_measure_s'):.1f} s."
        )
    lines += [
        "",
        "Baseline: "
        + ", ".join(f"{n} {_fmt(n, base[n])}" for n in ("accuracy", "size_bytes", "latency_ms", "energy_mj")),
        "",
    ]
    lines += ["### Pareto front", "", HEADER] + [row(t, base) for t in front(study)]
    lines += [
        "",
        "### Best single-technique points (smallest size within 1 point of the baseline's accuracy)",
        "",
        HEADER,
    ]
    for knob in KNOBS:
        alone = [t for t in done if set(Plan.from_params(t.params).active()) == {knob}]
        good = [t for t in alone if t.user_attrs["accuracy"] >= base["accuracy"] - 0.01]
        if good:
            lines.append(row(min(good, key=lambda t: t.user_attrs["size_bytes"]), base))
        elif alone:
            lines.append(
                row(max(alone, key=lambda t: t.user_attrs["accuracy"]), base)
                + " (none within 1 pt; most accurate shown)"
            )
    target = [
        t
        for t in done
        if t.user_attrs["size_bytes"] * 8 <= base["size_bytes"]
        and t.user_attrs["latency_ms"] * 2 <= base["latency_ms"]
        and t.user_attrs["accuracy"] >= base["accuracy"] - 0.01
    ]
    lines += ["", "### Target: >= 8x smaller, >= 2x faster, within 1 point", ""]
    if target:
        best = min(target, key=lambda t: (t.user_attrs["size_bytes"], t.user_attrs["latency_ms"]))
        lines += [f"{len(target)} trials meet it; the smallest:", "", HEADER, row(best, base)]
    else:
        lines.append("No trial meets it.")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-trials", type=int, default=40)
    p.add_argument("--storage", help="report on this existing study instead of running a search")
    p.add_argument("--study-name", default="tradeoff")
    p.add_argument("--out", help="write the markdown report here as well")
    p.add_argument("search_args", nargs="*", help="extra `tradeoff search` options, after --")
    args = p.parse_args()
    if args.storage:
        url, command = args.storage, f"tradeoff front --storage {args.storage}"
    else:
        work = tempfile.mkdtemp(prefix="tradeoff-bench-")
        env = dict(os.environ, TRADEOFF_CACHE=os.path.join(work, "cache"))
        cmd = ["tradeoff", "search", "--n-trials", str(args.n_trials), *args.search_args]
        command = " ".join(cmd)
        print(f"running `{command}` in {work}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "tradeoff.search.cli", *cmd[1:]], cwd=work, env=env, check=True)
        url = f"sqlite:///{os.path.join(work, 'tradeoff.db')}"
    study = optuna.load_study(study_name=args.study_name, storage=open_storage(url, heartbeat_interval=None))
    text = report(study, command)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
