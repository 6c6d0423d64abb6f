"""Depth in the search: the same search, budget and seeds with and without ``block_drop``.

    python benchmarks/depth.py --dir runs/depth --skip-done --out benchmarks/results/depth.md
    python benchmarks/depth.py --task fashion-mnist --dir runs/depth-fashion --skip-done ...
    python benchmarks/depth.py --task fashion-mnist --only-seed 2 ...   # one seed of the three
    python benchmarks/depth.py --task fashion-mnist --report-only   # the table from the records
    python benchmarks/depth.py --quick                       # tiny_resnet smoke run

For each seed, two runs of `tradeoff search` (the task's teacher, trained once before all runs),
one after the other on the same machine: ``without`` (the default space) and ``with``
(``--space block_drop=0:0.6:0.2`` added), each ``--n-trials 40`` and everything else at its
default. A run that ended is left alone with ``--skip-done``, so the benchmark resumes where it
stopped; ``--only with`` runs one arm.

Each finished run is kept as a record, ``benchmarks/results/depth/TASK/ARM-SEED.journal``: the
whole study copied into Optuna's journal storage (a text log that ``optuna.load_study`` reads
back), so the seeds can be run in different sessions and on different machines (the work
directory is not kept) and the table is computed from every recorded seed. A recorded run is not
run again. Runs of one seed compare through their paired latency ratios, so two machines' runs
can stand in one table; each row names its machine (the study's recorded CPU).

Reported per seed (issue 27's targets: hypervolume >= 1.05x; at equal accuracy >= 1.3x lower
latency; depth-dropped plans realise >= 0.8 of their MAC ratio):
- the hypervolume of each arm's complete trials, as ``benchmarks/allocation.py`` computes it,
  and the ratio with / without;
- the control for the search's luck: the arm with depth's hypervolume on its plans that dropped
  no block, and what its depth plans add to it (two runs of one sampler diverge once the depth
  knob is in the space: on digits seed 2 the whole 1.060x came from plans without a dropped block);
- at equal accuracy: for the levels 0.5, 1 and 2 points under the baseline's accuracy, the
  fastest plan of each arm at or above the level, and the ratio of their latencies. A plan's
  latency is compared as its ratio to the baseline's (``latency_ratio``: each trial is timed
  interleaved with the teacher in the same window), never in milliseconds across runs: two runs
  of the same baseline have measured 1.09 and 3.73 ms on this machine (load moves between runs,
  not within a window);
- the float plans (no quantization) that dropped blocks: their speed-up over the baseline as a
  fraction of their MAC ratio (median and range).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

import optuna
import torch
from allocation import complete, finished, front_lines, minutes, run  # beside this script
from cheaper import QUICK, hypervolume
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from tradeoff.search.study.records import FACTS_ATTR, SIBLING_OF_ATTR, baseline_of
from tradeoff.search.trial.measure import cpu_name
from tradeoff.search.trial.measure.accuracy import differ_beyond_noise

ARMS = {"without": [], "with": ["--space", "block_drop=0:0.6:0.2"]}
LEVELS = (0.5, 1.0, 2.0)  # points under the baseline's accuracy
MACHINE_ATTR = "benchmark_machine"  # set on a record: the CPU its runs were measured on
RECORDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "depth")


def record_path(task: str | None, name: str, records: str = RECORDS) -> str:
    return os.path.join(records, task or "digits", f"{name}.journal")


def journal(path: str) -> JournalStorage:
    return JournalStorage(JournalFileBackend(path))


def save_record(url: str, name: str, path: str) -> None:
    """Copy the finished study ``name`` into the journal file ``path`` (written beside it, then
    moved into place, so an interrupted copy leaves no half record)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    if os.path.exists(tmp):
        os.remove(tmp)
    optuna.copy_study(from_study_name=name, from_storage=url, to_storage=journal(tmp))
    # the runs of a work directory ran on this machine (a work directory does not travel)
    optuna.load_study(study_name=name, storage=journal(tmp)).set_user_attr(MACHINE_ATTR, cpu_name())
    os.replace(tmp, path)


def recorded_seeds(task: str | None, records: str = RECORDS) -> set[int]:
    folder = os.path.join(records, task or "digits")
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return {int(f[: -len(".journal")].rsplit("-", 1)[1]) for f in names if f.endswith(".journal")}


def machine(study: optuna.Study) -> str:
    return study.user_attrs.get(MACHINE_ATTR) or f"{cpu_name()} (this run)"


def load(url: str, name: str, path: str) -> optuna.Study | None:
    """The run ``name``: its record where there is one, else the work directory's study."""
    if os.path.exists(path):
        return optuna.load_study(study_name=name, storage=journal(path))
    try:
        return optuna.load_study(study_name=name, storage=url)
    except KeyError:
        return None


def relative_latency(t, base) -> float:
    """The plan's latency as a fraction of the baseline's, timed in the same window (the paired
    ratio the trial stored; its latency_ms is that ratio times its run's baseline figure)."""
    ratio = t.user_attrs.get("latency_ratio")
    return ratio if ratio else t.user_attrs["latency_ms"] / base["latency_ms"]


def fastest_at(trials, level: float, base):
    ok = [t for t in trials if t.user_attrs.get("accuracy", 0) >= level]
    return min(ok, key=lambda t: relative_latency(t, base), default=None)


def dropped(t) -> bool:
    return bool((t.user_attrs.get(FACTS_ATTR) or {}).get("dropped_blocks"))


def realised(t, base) -> float | None:
    """Speed-up over the baseline as a fraction of the MAC ratio, for a float plan."""
    a = t.user_attrs
    if (
        (a.get(FACTS_ATTR) or {}).get("weight_bits", 32) != 32
        or not a.get("flops")
        or not a.get("latency_ms")
    ):
        return None
    return (1 / relative_latency(t, base)) / (base["flops"] / a["flops"])


def median_trial_s(study) -> float:
    """The median wall time of a plan the run measured itself (not a duplicate or a bit-width
    sibling that reused another trial's fine-tune)."""
    own = [
        t.user_attrs.get("time_total_s", 0.0)
        for t in complete(study)
        if SIBLING_OF_ATTR not in t.user_attrs and t.user_attrs.get("time_total_s")
    ]
    return statistics.median(own) if own else 0.0


def beyond_teacher(study, base) -> int:
    """Search-time students scoring above the teacher beyond the 95 % interval of the
    difference (a teacher they beat by more would be undertrained)."""
    return sum(
        t.user_attrs["accuracy"] > base["accuracy"]
        and differ_beyond_noise(
            t.user_attrs["accuracy"], base["accuracy"], t.user_attrs.get("accuracy_images", 0)
        )
        for t in complete(study)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0 to N-1 (default 3)")
    ap.add_argument(
        "--only-seed",
        type=int,
        action="append",
        help="run only this seed (repeatable); the table still reads every recorded seed",
    )
    ap.add_argument("--records", default=RECORDS, help=f"folder of the runs' records (default {RECORDS})")
    ap.add_argument("--n-trials", type=int, default=40)
    ap.add_argument("--task", help="the task (default: the bundled digits)")
    ap.add_argument("--quick", action="store_true", help="tiny_resnet, short fine-tunes, 12 plans, 1 seed")
    ap.add_argument("--dir", help="work directory (kept; default: a temporary one)")
    ap.add_argument(
        "--report-only", action="store_true", help="read the records (and the studies in --dir), run nothing"
    )
    ap.add_argument("--only", choices=sorted(ARMS), help="run this arm alone")
    ap.add_argument(
        "--skip-done", action="store_true", help="leave the runs whose study is complete in --dir"
    )
    ap.add_argument("--out", help="markdown file to write")
    args = ap.parse_args()
    base = list(QUICK) if args.quick else []
    if args.task:
        base += ["--task", args.task]
    seeds = 1 if args.quick else args.seeds
    n = 12 if args.quick else args.n_trials
    cwd = os.path.abspath(args.dir or tempfile.mkdtemp(prefix="tradeoff-depth-"))
    os.makedirs(cwd, exist_ok=True)
    env = dict(os.environ, TRADEOFF_RUN_DIR=os.path.join(cwd, "run"))
    url = f"sqlite:///{os.path.join(cwd, 'tradeoff.db')}"
    task, records = args.task, args.records
    if args.quick and records == RECORDS:  # a smoke run's records stay in its work directory
        records = os.path.join(cwd, "records")
    if not args.report_only:
        for seed in args.only_seed or range(seeds):
            for arm, extra in ARMS.items():
                name = f"{arm}-{seed}"
                path = record_path(task, name, records)
                if (args.only and arm != args.only) or os.path.exists(path):
                    continue
                if not (args.skip_done and finished(cwd, name, n)):
                    run(name, "allocated", seed, cwd, env, [*base, *extra], n)
                save_record(url, name, path)
    rows, ratios, speedups, fractions, fronts = [], [], {lv: [] for lv in LEVELS}, [], []
    adds = []  # per seed: the arm with depth's hypervolume over that of its plans that dropped no block
    others = []  # the same fraction for the float plans of the arm without depth, for comparison
    found = []
    for seed in sorted({*range(seeds), *(args.only_seed or []), *recorded_seeds(task, records)}):
        studies = {
            arm: load(url, f"{arm}-{seed}", record_path(task, f"{arm}-{seed}", records)) for arm in ARMS
        }
        if not all(studies.values()):
            continue
        found.append(seed)
        bases = {arm: baseline_of(s) for arm, s in studies.items()}
        done = {arm: complete(s) for arm, s in studies.items()}  # read once per study
        hv = {arm: hypervolume(done[arm], bases[arm]) for arm in studies}
        ratio = hv["with"] / hv["without"] if hv["without"] else float("inf")
        ratios.append(ratio)
        # the control for the search's own luck: the arm with depth scored on its plans that
        # dropped no block (what its sampler found elsewhere in the space), and what its depth
        # plans add on top of them
        hv_kept = hypervolume([t for t in done["with"] if not dropped(t)], bases["with"])
        adds.append(hv["with"] / hv_kept if hv_kept else float("inf"))
        cells = []
        for level in LEVELS:
            at = bases["without"]["accuracy"] - level / 100
            w, d = (fastest_at(done[a], at, bases[a]) for a in ("without", "with"))
            if w and d:
                rw, rd = relative_latency(w, bases["without"]), relative_latency(d, bases["with"])
                speedups[level].append(rw / rd)
                mark = ", a depth plan" if dropped(d) else ", no block dropped"
                cells.append(f"{rw:.4f} / {rd:.4f} ({speedups[level][-1]:.2f}x{mark})")
            else:
                cells.append("-")
        with_drop = [t for t in done["with"] if dropped(t)]
        seed_fractions = [f for f in (realised(t, bases["with"]) for t in with_drop) if f]
        fractions += seed_fractions
        others += [
            f
            for f in (
                realised(t, bases["without"])
                for t in done["without"]
                if t.user_attrs.get("flops") != bases["without"]["flops"]  # not the baseline itself
            )
            if f
        ]
        rows.append(
            f"| {seed} | {machine(studies['without'])} | {hv['without']:.2f} | {hv['with']:.2f} | {ratio:.3f} | "
            + f"{hv_kept:.2f} ({hv_kept / hv['without']:.3f}x) | {adds[-1]:.3f} | "
            + " | ".join(cells)
            + f" | {len(with_drop)} | "
            + (f"{statistics.median(seed_fractions):.2f} ({len(seed_fractions)})" if seed_fractions else "-")
            + f" | {bases['without']['latency_ms']:.3f} / {bases['with']['latency_ms']:.3f}"
            + f" | {minutes(studies['without']):.1f} / {minutes(studies['with']):.1f}"
            + f" | {median_trial_s(studies['without']):.1f} / {median_trial_s(studies['with']):.1f}"
            + f" | {beyond_teacher(studies['without'], bases['without'])} / "
            + f"{beyond_teacher(studies['with'], bases['with'])} |"
        )
        for arm, study in studies.items():
            fronts += [
                "",
                f"#### seed {seed}, {arm} depth: front",
                "",
                *front_lines(study, baseline_of(study)),
            ]
    if not found:
        raise SystemExit(
            f"no seed has both runs recorded in {records} or in {cwd}; run without --report-only"
        )
    lines = [
        f"### Depth in the search: {len(found)} seed(s), {n} plans each, task {args.task or 'digits'} "
        f"({cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, optuna {optuna.__version__})",
        "",
        f"`python benchmarks/depth.py{' --quick' if args.quick else ''}{' --task ' + args.task if args.task else ''}`",
        "",
        "| seed | machine | hypervolume without | with depth | ratio | "
        + "with depth, its plans that dropped no block (x without) | what its depth plans add (x) | "
        + " | ".join(f"fastest within {lv:g} pt, x baseline latency (without / with)" for lv in LEVELS)
        + " | plans that dropped blocks | float depth plans: realised fraction of the MAC ratio (median, plans)"
        + " | baseline ms (without / with) | minutes (without / with) "
        + "| median trial s (without / with) | students above the teacher beyond noise (without / with) |",
        "|---|---|---|---|---|---|---|" + "---|" * len(LEVELS) + "---|---|---|---|---|---|",
        *rows,
        "",
        f"Median hypervolume ratio over {len(found)} seed(s) ({', '.join(map(str, found))}): **{statistics.median(ratios):.3f}** "
        f"(range {min(ratios):.3f}-{max(ratios):.3f}; target >= 1.05). The arm with depth's own plans "
        f"that dropped no block are the control for the search's luck: its depth plans add a median "
        f"**{statistics.median(adds):.3f}x** to their hypervolume (range {min(adds):.3f}-{max(adds):.3f}).",
        *(
            f"Latency ratio of the fastest plans within {lv:g} point(s): median **{statistics.median(v):.2f}x** "
            f"over {len(v)} seed(s) (range {min(v):.2f}-{max(v):.2f}; target >= 1.3)."
            for lv, v in speedups.items()
            if v
        ),
        (
            f"Float plans that dropped blocks realise a median **{statistics.median(fractions):.2f}** of their "
            f"MAC ratio as speed-up (range {min(fractions):.2f}-{max(fractions):.2f}, {len(fractions)} plans; "
            "target >= 0.8)"
            + (
                f"; the float plans of the arm without depth (narrower, pruned, factored): median "
                f"{statistics.median(others):.2f} ({len(others)} plans)."
                if others
                else "."
            )
            if fractions
            else "No float plan dropped blocks."
        ),
        *fronts,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
