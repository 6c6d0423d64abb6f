"""The default search on the bundled task, end to end, and what its front holds.

    python benchmarks/default_front.py --n-trials 40 --out benchmarks/results/default_front.md

Runs `tradeoff search` (a fresh study, a fresh teacher cache so that teacher training is timed)
in a scratch directory, then reports: the machine, the teacher, trial times and where they go,
the Pareto front against the baseline, the best single-technique points, and the best plan that
is >= 8x smaller and >= 2x faster than the baseline within 1 point of its accuracy.
With --storage/--study-name it only reports on an existing study. Then the skeptic's checks
(`checks`): the teacher against its best student within the binomial noise, every quantized
front plan timed against its own float structure, the MAC ratio the front realises, and how
energy correlates with the other figures.
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

from tradeoff.search.study.records import TEACHER_ATTR, baseline_of
from tradeoff.search.trial.measure import cpu_name
from tradeoff.search.views.report import format_figure, front
from tradeoff.spaces import KNOBS, Plan, format_plan
from tradeoff.storage import open_storage


def ratio(t, base, name) -> str:
    v, b = t.user_attrs[name], base[name]
    if name == "accuracy":
        return f"{100 * v:.2f}% ({100 * (v - b):+.2f})"
    return f"{format_figure(name, v)} (/{b / v:.1f})" if v else "0"


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
        + ", ".join(
            f"{n} {format_figure(n, base[n])}" for n in ("accuracy", "size_bytes", "latency_ms", "energy_mj")
        ),
        "",
    ]
    lines += ["### Pareto front", "", HEADER] + [row(t, base) for t in front(study)]
    lines += [
        "",
        "### Best single-technique points (smallest size within 1 point of the baseline's accuracy)",
        "",
        HEADER,
    ]
    singles = [t for t in done if len(Plan.from_params(t.params).active()) == 1]
    if not singles:
        lines[-1] = "None measured: the `auto` sampler's start design holds no single-technique plan."
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


def checks(study: optuna.Study, url: str, artifacts: str) -> str:
    """Issue 15's checks on the run: the teacher against its students with binomial intervals;
    every quantized front plan timed against the float model of the same structure (its own
    fine-tuned float twin, rebuilt) interleaved in one window; the MAC ratio the front realises;
    and how the energy figure correlates with the others over every trial."""
    from scipy.stats import spearmanr

    from tradeoff.search.commands import load_study
    from tradeoff.search.task.tasks import task_for
    from tradeoff.search.task.teacher import ensure_teacher
    from tradeoff.search.trial.measure import deploy, paired_latency
    from tradeoff.search.trial.measure.accuracy import binomial_interval, differ_beyond_noise
    from tradeoff.search.trial.runner import Runner
    from tradeoff.storage import open_artifact_store

    base = baseline_of(study)
    done = [
        t
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE and "duplicate_of" not in t.user_attrs
    ]
    teacher = study.user_attrs.get(TEACHER_ATTR, {})
    n = int(base.get("accuracy_images") or 0)
    acc = base["accuracy"]
    lo, hi = binomial_interval(round(acc * n), n)
    best = max(done, key=lambda t: t.user_attrs["accuracy"])
    beyond = differ_beyond_noise(best.user_attrs["accuracy"], acc, n) and best.user_attrs["accuracy"] > acc
    lines = [
        "",
        "### The skeptic's checks",
        "",
        f"**Teacher**: validation {100 * acc:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}] (95 % binomial interval, "
        f"{n} images), test {100 * teacher.get('test_accuracy', 0):.2f}%. Best student: #{best.number} "
        f"{100 * best.user_attrs['accuracy']:.2f}% ({format_plan(best.params)}): "
        + (
            "beyond the noise: the teacher is undertrained."
            if beyond
            else "not beyond the noise of the teacher."
        ),
    ]
    _, config = load_study(url, study.study_name)
    task = task_for(config, log=lambda m: None)
    runner = Runner(
        config,
        task,
        ensure_teacher(study, task, open_artifact_store(artifacts), train=False, log=lambda m: None),
    )
    quantized = [t for t in front(study) if Plan.from_params(t.params).weight_bits < 32]
    lines += [
        "",
        f"**Quantized front plans against the float model of the same structure** ({config.runtime}, "
        "rebuilt, both timed interleaved in one window, batch 1; ratio = int8 / float, 95 % interval):",
        "",
        "| trial | plan | float ms | quantized ms | ratio [95 % interval] |",
        "|---|---|---|---|---|",
    ]
    slower = 0
    for t in quantized:
        plan = Plan.from_params(t.params, options=config.knob_options)
        compressed, _ = runner.build(
            plan, int8_form=t.user_attrs.get("int8_form", "auto")
        )  # the trial's form
        q = deploy(compressed.model, config.runtime, task.example_input)
        f = deploy(compressed.float_model, config.runtime, task.example_input)
        p = paired_latency(q, f, task.example_input, warmup=20, repeats=200)
        slower += p["ratio_lo"] > 1
        lines.append(
            f"| #{t.number} | {format_plan(t.params)} | {p['reference']:.4f} | {p['median']:.4f} | "
            f"{p['ratio']:.2f} [{p['ratio_lo']:.2f}, {p['ratio_hi']:.2f}] |"
        )
    lines += [
        "",
        f"{slower} of {len(quantized)} quantized front plans are slower than their float structure beyond the interval.",
    ]
    lines += [
        "",
        "**MAC ratio realised by the front** (speed-up over the baseline / MAC reduction; latencies as "
        "stored, each timed against the teacher):",
        "",
        "| trial | plan | MACs (M) | MAC ratio | speed-up | realised |",
        "|---|---|---|---|---|---|",
    ]
    for t in front(study):
        if t.number == base.get("trial"):
            continue
        mac_ratio = base["macs"] / t.user_attrs["macs"]
        speed = base["latency_ms"] / t.user_attrs["latency_ms"]
        lines.append(
            f"| #{t.number} | {format_plan(t.params)} | {t.user_attrs['macs'] / 1e6:.2f} | {mac_ratio:.1f}x | "
            f"{speed:.1f}x | {speed / mac_ratio:.2f} |"
        )
    names = ("size_bytes", "latency_ms", "macs", "params")
    rho = {
        k: spearmanr([t.user_attrs["energy_mj"] for t in done], [t.user_attrs[k] for t in done])[0]
        for k in names
    }
    lines += [
        "",
        f"**Energy** ({done[0].user_attrs['energy_method'].split(';')[0]}): Spearman rank correlation with the "
        f"other figures over the {len(done)} measured plans: "
        + ", ".join(f"{k} {v:.3f}" for k, v in rho.items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-trials", type=int, default=40)
    p.add_argument("--storage", help="report on this existing study instead of running a search")
    p.add_argument("--study-name", default="tradeoff")
    p.add_argument("--out", help="write the markdown report here as well")
    p.add_argument(
        "--artifacts", default="tradeoff-artifacts", help="with --storage: the study's artifact store"
    )
    p.add_argument("--command", help="with --storage: the command that made the study, for the report")
    p.add_argument("--no-checks", action="store_true", help="skip the skeptic's checks (they rebuild plans)")
    p.add_argument("search_args", nargs="*", help="extra `tradeoff search` options, after --")
    args = p.parse_args()
    if args.storage:
        url, command = args.storage, args.command or f"tradeoff front --storage {args.storage}"
        artifacts = args.artifacts
    else:
        work = tempfile.mkdtemp(prefix="tradeoff-bench-")
        env = dict(os.environ, TRADEOFF_CACHE=os.path.join(work, "cache"))
        cmd = ["tradeoff", "search", "--n-trials", str(args.n_trials), *args.search_args]
        command = " ".join(cmd)
        print(f"running `{command}` in {work}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "tradeoff.search.cli", *cmd[1:]], cwd=work, env=env, check=True)
        url = f"sqlite:///{os.path.join(work, 'tradeoff.db')}"
        artifacts = os.path.join(work, "tradeoff-artifacts")
    study = optuna.load_study(study_name=args.study_name, storage=open_storage(url, heartbeat_interval=None))
    text = report(study, command)
    if not args.no_checks:
        text += checks(study, url, artifacts)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
