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

The real task (hours on 2 cores): `--task fashion-mnist --dir DIR --one-at-a-time` runs the arms
one after the other on every core instead, each resumed where it stopped (a study already at
--n-trials plans is left alone), so the benchmark can run in parts (`--seeds 0 --samplers auto`).
Arms run apart see different loads, so wherever a trial recorded its paired latency ratio
(`latency_ratio`: the plan timed interleaved with the baseline in one window) the hypervolume
reads that ratio, times the seed's reference latency, instead of its milliseconds. Likewise each
plan's estimated energy is read as its ratio to its own arm's baseline and its accuracy as its drop
from its own teacher, so that arms of one seed run on different machines (another last-level cache
in the energy estimate, a teacher retrained on another CPU) share one reference; the report says
where a seed's arms differ so, since an energy ratio still follows its machine's cache. An arm run
on another machine kind keeps its seed's energy axis with ``TRADEOFF_LLC`` set to the cache the
other arms' estimates assumed (the record's ``energy_cache``, the report's machine column).

Each arm's figures are kept in ``benchmarks/results/real_search/TASK/ARM-SEED.json`` (every measured
plan's objectives, paired latency ratio, seconds, order and student width; the baseline; the
sampler line; the machine) as soon as the arm ends, and committed: a new machine (a new session) has no work
directory, so the table is recomputed from these records where an arm's study is gone, and an arm
recorded at --n-trials plans is not run again. Delete a record to run its arm again (after a change
of the sampler policy, say).

An arm that another benchmark has already run with its very configuration need not run twice:
``--seeds S --samplers ARM --adopt JOURNAL`` records it from that study (``depth.py``'s run
without depth, ``benchmarks/results/depth/TASK/without-S.journal``, is the default search of seed
S, so it is the ``auto`` arm), after checking that the study's stored configuration is the one
the arm would make and that it holds --n-trials plans.

An arm may name a granularity too, ``SAMPLER:GRANULARITY``: ``--samplers auto auto:global`` is
per-layer allocation (the default) against one value per knob, the same sampler, seed and budget,
so one run of the default arm serves both comparisons.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import optuna
from allocation import minutes  # beside this script
from samplers import OBJECTIVES, hypervolume, normalise

from tradeoff.search.study.records import BASELINE_ATTR, CONFIG_ATTR, DUPLICATE_ATTR, SAMPLER_ATTR
from tradeoff.search.trial.measure import cpu_name
from tradeoff.storage import open_storage

HERE = os.path.dirname(os.path.abspath(__file__))
RECORDS = os.path.join(HERE, "results", "real_search")


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


def record_path(task: str | None, arm: str, seed: int) -> str:
    """Where the record of one arm and seed is kept (committed)."""
    return os.path.join(RECORDS, task or "digits", f"{arm.replace(':', '-')}-{seed}.json")


def read_record(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def record_of(study: optuna.Study, arm: str, seed: int, task: str | None, machine: str) -> dict:
    """What the table needs of one arm's study: its measured plans (complete, not repeats) in the
    order they completed, each with its objectives, paired latency ratio and seconds."""
    from tradeoff.search.study.worker import budgeted

    done = sorted(
        (
            t
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if DUPLICATE_ATTR not in t.user_attrs
        ),
        key=lambda t: t.datetime_complete,
    )
    from tradeoff.search.study.config import SearchConfig

    config = SearchConfig.from_json(study.user_attrs[CONFIG_ATTR])
    return {
        "task": task or "digits",
        "arm": arm,
        "seed": seed,
        "machine": machine,
        "energy_cache": energy_cache(done),
        "sampler": study.user_attrs.get(SAMPLER_ATTR),
        "tpe_density": config.density if config.sampler in ("auto", "tpe") else None,
        "baseline": study.user_attrs[BASELINE_ATTR],
        "minutes": round(minutes(study), 2),
        "trials": [
            {
                "number": t.number,
                "budgeted": budgeted(t),
                "seconds": round(t.duration.total_seconds(), 2),
                "figures": {o: t.user_attrs[o] for o in OBJECTIVES},
                "latency_ratio": t.user_attrs.get("latency_ratio"),
                "width": t.params.get("student_width"),
            }
            for t in done
        ],
    }


def save_record(record: dict, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)


def refreshed(directory: str, arm: str, seed: int, task: str | None) -> dict | None:
    """The arm's record: from its study where the work directory holds one (saved again, keeping
    the machine it was first recorded on when it has no more plans than then), else as committed."""
    path = record_path(task, arm, seed)
    kept = read_record(path)
    study = existing(directory)
    if study is None:
        return kept
    here = f"{cpu_name()}, {os.cpu_count()} cores"
    record = record_of(study, arm, seed, task, here)
    if kept and len(kept["trials"]) == len(record["trials"]):
        record["machine"] = kept["machine"]
    save_record(record, path)
    return record


def adopt(path: str, arm: str, seed: int, a: argparse.Namespace) -> None:
    """Record an arm from a study another benchmark ran with the very configuration the arm
    would run (``depth.py``'s run without depth is the default search, seed for seed): the study
    kept in the Optuna journal file ``path`` must hold --n-trials budgeted plans and a stored
    configuration equal to the one ``tradeoff search --seed SEED --sampler ... --task ...`` makes,
    else nothing is recorded. Running the same search twice would only measure it twice."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from tradeoff.search.study.config import SearchConfig
    from tradeoff.search.study.worker import counts

    if not os.path.isfile(path):
        sys.exit(f"--adopt {path}: no such file; give a study record (an Optuna journal file)")
    storage = JournalStorage(JournalFileBackend(path))
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if len(names) != 1:
        sys.exit(f"--adopt {path}: holds {len(names)} studies, not one; give the record of one run")
    study = optuna.load_study(study_name=names[0], storage=storage)
    sampler, _, granularity = arm.partition(":")
    wanted = SearchConfig(task=a.task or "digits", seed=seed, sampler=sampler)
    if granularity:
        wanted = dataclasses.replace(wanted, granularity=granularity)
    wanted = wanted.validated(n_trials=a.n_trials).__dict__
    kept = SearchConfig.from_json(study.user_attrs[CONFIG_ATTR]).__dict__
    differ = sorted(k for k in wanted if wanted[k] != kept.get(k))
    if differ:
        sys.exit(
            f"--adopt {path}: its study is not the arm {arm} of seed {seed} ({', '.join(differ)} differ); "
            "adopt only a run of the arm's own configuration"
        )
    if counts(study)[0] < a.n_trials:
        sys.exit(f"--adopt {path}: {counts(study)[0]} budgeted plans, fewer than --n-trials {a.n_trials}")
    machine = study.user_attrs.get("benchmark_machine") or "unknown"
    record = record_of(study, arm, seed, a.task, machine)
    record["adopted_from"] = os.path.relpath(path, os.path.dirname(HERE))
    save_record(record, record_path(a.task, arm, seed))
    print(f"seed {seed}: {arm} recorded from {record['adopted_from']}", file=sys.stderr, flush=True)


def energy_cache(trials: list) -> str | None:
    """The cache the arm's energy estimate assumed, from its first trial's recorded method: the
    machine's (sysfs) or a target's (``$TRADEOFF_LLC``, which lets an arm run on another machine
    kind keep its seed's energy axis); None where the energy was measured, not estimated."""
    for t in trials:
        found = re.search(
            r"45 nm; ((?:last-level )?cache [\d.]+ MiB \((?:sysfs|\$TRADEOFF_LLC|assumed))",
            t.user_attrs.get("energy_method", ""),
        )
        if found:
            return found.group(1).replace("last-level ", "").replace("(", "from ")
    return None


def budgeted_count(record: dict | None) -> int:
    return sum(t["budgeted"] for t in record["trials"]) if record else 0


def common_baseline(records: list[dict]) -> dict:
    """The baseline figures of the arms of one seed, latency as the geometric mean of theirs."""
    bases = [r["baseline"] for r in records]
    base = dict(bases[0])
    for name in OBJECTIVES[1:]:
        base[name] = statistics.geometric_mean([b[name] for b in bases])
    return base


def figures(t: dict, base: dict, own: dict) -> dict:
    """The trial's objectives on the seed's reference ``base``, read against its arm's own
    baseline ``own`` wherever that depends on the machine the arm ran on: the latency as its paired
    ratio (where it has one), the estimated energy as its ratio to its own baseline's (the
    estimate reads weights from DRAM or from the last-level cache by the machine's cache size) and
    the accuracy as its drop from its own teacher's (a teacher retrained on another CPU may differ
    in the last digit). Arms of one seed on one machine read the same either way."""
    f = dict(t["figures"])
    if t.get("latency_ratio"):
        f["latency_ms"] = t["latency_ratio"] * base["latency_ms"]
    f["energy_mj"] = f["energy_mj"] / own["energy_mj"] * base["energy_mj"]
    f["accuracy"] = f["accuracy"] - own["accuracy"] + base["accuracy"]
    return f


def mixed_machines(seed: int, records: dict[str, dict]) -> list[str]:
    """A line for the report where the arms of one seed did not measure the same baseline
    (another machine, another teacher): what ``figures`` does about it, and what it cannot."""
    lines = []
    energy = {s: r["baseline"]["energy_mj"] for s, r in records.items()}
    if max(energy.values()) > 1.01 * min(energy.values()):
        lines.append(
            f"- seed {seed}: the arms' estimated baseline energies differ ("
            + ", ".join(f"{s} {e:.3g} mJ" for s, e in energy.items())
            + "): their machines' last-level caches differ, so each plan's energy is read as its ratio"
            " to its own arm's baseline; the ratio still follows its machine's cache (a plan that fits"
            " one cache and not the other), so these arms are not quite on one energy axis: run a"
            " seed's arms on one machine kind, or with TRADEOFF_LLC set to one cache"
        )
    accuracy = {s: r["baseline"]["accuracy"] for s, r in records.items()}
    if len(set(accuracy.values())) > 1:
        lines.append(
            f"- seed {seed}: the arms' teachers differ ("
            + ", ".join(f"{s} {a:.2%}" for s, a in accuracy.items())
            + " on the validation images; retrained on different CPUs): each plan's accuracy is read"
            " as its drop from its own teacher"
        )
    return lines


def record_hypervolume(record: dict, base: dict) -> tuple[float, str, str, str]:
    """(hypervolume of the measured plans against ``base``; how many, of them the budgeted ones;
    median trial seconds of the budgeted plans and of the others, the queued bit-width variants;
    the hypervolume when 10 and 20 budgeted plans had completed, in the order they completed)."""
    done = record["trials"]
    points = [normalise(figures(t, base, record["baseline"]), base) for t in done]
    own = [t for t in done if t["budgeted"]]
    seconds = [
        f"{statistics.median(t['seconds'] for t in ts):.1f}" if ts else "-"
        for ts in (own, [t for t in done if not t["budgeted"]])
    ]
    # the points measured before the budgeted plan after the 10th (20th) completed
    ends = [done.index(own[k]) if k < len(own) else len(done) for k in (10, 20)]
    early = " / ".join(f"{hypervolume(points[:e]):.2f}" for e in ends)
    return hypervolume(points), f"{len(done)} ({len(own)})", " / ".join(seconds), early


def families(record: dict, base: dict) -> str:
    """The hypervolume of the arm's width-1.0 plans (the teacher's weights, compressed) and of its
    students (narrower, distilled from scratch) apart: on Fashion-MNIST the front is made of these
    two families, and which one carries it differs by seed. '-' for a record kept without widths."""
    done = record["trials"]
    if not done or any("width" not in t for t in done):
        return "-"
    parts = [[t for t in done if (t["width"] or 1.0) == 1.0], [t for t in done if (t["width"] or 1.0) != 1.0]]
    return " / ".join(
        f"{hypervolume([normalise(figures(t, base, record['baseline']), base) for t in p]):.2f} ({len(p)})"
        for p in parts
    )


def existing(directory: str) -> optuna.Study | None:
    """The study in ``directory`` where it has measured a plan, else None."""
    from tradeoff.search.study.worker import counts

    if not os.path.exists(os.path.join(directory, "tradeoff.db")):
        return None
    try:
        study = load(directory)
    except KeyError:
        return None
    return study if counts(study)[0] else None


def measured(directory: str) -> int:
    """Budgeted plans the study in ``directory`` holds (0 where there is none yet)."""
    from tradeoff.search.study.worker import counts

    study = existing(directory)
    return counts(study)[0] if study else 0


def to_measure(directory: str, arm: str, seed: int, a: argparse.Namespace) -> int:
    """Plans the arm still has to measure: none where its study or its committed record holds
    --n-trials; where only a shorter record is left (its study gone with another machine), the
    whole arm runs again in a new study."""
    if os.path.exists(os.path.join(directory, "tradeoff.db")):
        return a.n_trials - measured(directory)
    kept = budgeted_count(read_record(record_path(a.task, arm, seed)))
    if kept >= a.n_trials:
        return 0
    if kept:
        print(
            f"seed {seed}: {arm}: its record holds {kept} plans and its study is not here; running it again",
            file=sys.stderr,
            flush=True,
        )
    return a.n_trials


def arm_dir(work: str, arm: str, seed: int) -> str:
    """The study directory of one arm (``SAMPLER`` or ``SAMPLER:GRANULARITY``) and seed."""
    return os.path.join(work, f"{arm.replace(':', '-')}-{seed}")


def run_seed(seed: int, a: argparse.Namespace, work: str) -> None:
    task = ["--task", a.task] if a.task else []
    todo = {}
    for s in a.samplers:
        d = arm_dir(work, s, seed)
        os.makedirs(d, exist_ok=True)
        missing = to_measure(d, s, seed, a)
        if missing > 0:
            todo[s] = (d, missing)
    if not todo:
        return
    here = cpu_name()
    elsewhere = {
        r["machine"].split(",")[0]
        for s in a.samplers
        if (r := read_record(record_path(a.task, s, seed))) and s not in todo
    } - {here}
    if elsewhere:
        print(
            f"seed {seed}: warning: its other arms ran on {', '.join(sorted(elsewhere))}, this machine is "
            f"{here}; the energy estimate follows the machine's cache and the teacher is retrained here, "
            "so the report reads both against each arm's own baseline (better: run a seed's arms on one "
            "machine kind, or set TRADEOFF_LLC to the cache their energy estimates assumed)",
            file=sys.stderr,
            flush=True,
        )
    # the seed's teacher, trained (or found in the cache) once before the arms
    warm = tradeoff(
        ["search", "--n-trials", "1", "--seed", str(seed), "--study-name", f"warm{seed}", *task], work
    )
    out, _ = warm.communicate()
    if warm.returncode:
        sys.exit(out)
    procs = []
    for s, (d, missing) in todo.items():
        sampler, _, granularity = s.partition(":")
        args = ["search", "--seed", str(seed), "--sampler", sampler, "--n-trials", str(missing), *task]
        args += ["--granularity", granularity] if granularity else []
        if not a.one_at_a_time:
            args += ["--threads", "1"]
        print(f"seed {seed}: {s}, {missing} plans to measure", file=sys.stderr, flush=True)
        proc = tradeoff(args, d)
        if not a.one_at_a_time:
            procs.append((s, proc))
            continue
        out, _ = proc.communicate()
        with open(os.path.join(d, "search.log"), "a") as f:
            f.write(out)
        # the arm's record, saved as soon as it ends (or stops): a session that ends before the
        # seed's last arm keeps every arm that finished
        refreshed(d, s, seed, a.task)
        if proc.returncode:
            sys.exit(out)
    for s, p in procs:
        out, _ = p.communicate()
        if p.returncode:
            refreshed(todo[s][0], s, seed, a.task)
            sys.exit(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n-trials", type=int, default=40)
    ap.add_argument(
        "--samplers",
        nargs="+",
        default=["auto", "random"],
        help="the arms: a sampler, or SAMPLER:GRANULARITY (auto:global is the default sampler on one value "
        "per knob; a plain sampler runs at the default granularity, allocated)",
    )
    ap.add_argument("--out", default=os.path.join(HERE, "results", "real_search.md"))
    ap.add_argument("--report", metavar="DIR", help="only recompute the table from the studies in DIR")
    ap.add_argument("--task", help="the task (default: the bundled digits)")
    ap.add_argument("--dir", help="work directory, kept and resumed (default: a temporary one)")
    ap.add_argument(
        "--one-at-a-time", action="store_true", help="run the arms one after the other on every core"
    )
    ap.add_argument(
        "--adopt",
        metavar="JOURNAL",
        help="record the one arm of the one seed given from this study record (an Optuna journal "
        "file another benchmark kept, e.g. benchmarks/results/depth/TASK/without-S.journal), where "
        "its configuration is the arm's own",
    )
    a = ap.parse_args()
    if a.adopt:
        if len(a.seeds) != 1 or len(a.samplers) != 1:
            sys.exit("--adopt records one arm of one seed: give one --seeds and one --samplers")
        adopt(a.adopt, a.samplers[0], a.seeds[0], a)
    work = a.report or a.dir or tempfile.mkdtemp(prefix="tradeoff-real-search-")
    os.makedirs(work, exist_ok=True)
    results: dict[str, dict[int, float]] = {s: {} for s in a.samplers}
    rows: list[str] = []
    notes: list[str] = []
    t0 = time.perf_counter()
    for seed in a.seeds:
        if not a.report:
            run_seed(seed, a, work)
        # the arms run so far (a benchmark in parts reports what it has)
        found = {s: refreshed(arm_dir(work, s, seed), s, seed, a.task) for s in a.samplers}
        records = {s: r for s, r in found.items() if r and r["trials"]}
        if not records:
            continue
        base = common_baseline(list(records.values()))
        notes += mixed_machines(seed, records)
        for s, r in records.items():
            hv, n, median_s, early = record_hypervolume(r, base)
            results[s][seed] = hv
            own = r["baseline"]["latency_ms"]
            rows.append(
                f"| {seed} | {s} | {hv:.2f} | {early} | {families(r, base)} | {n} | {median_s} | {own:.2f} / {base['latency_ms']:.2f} | "
                f"{r['minutes']:.1f} | {r['machine']}{'; energy: ' + r['energy_cache'] if r.get('energy_cache') else ''} | "
                f"{r.get('tpe_density') or '-'} |"
            )
            print(f"seed {seed}: {s} hypervolume {hv:.2f} over {n} plans", file=sys.stderr, flush=True)
    took = (
        f"{time.perf_counter() - t0:.0f} s in all" if not a.report else "figures recomputed from its studies"
    )
    how = (
        "one after the other on every core, latency read as each trial's paired ratio"
        if a.one_at_a_time
        else "the searches of one seed side by side on one thread each"
    )
    command = (
        f"python benchmarks/real_search.py --seeds {' '.join(map(str, a.seeds))} --n-trials {a.n_trials}"
    )
    command += f" --samplers {' '.join(a.samplers)}" + (f" --task {a.task}" if a.task else "")
    command += " --one-at-a-time" if a.one_at_a_time else ""
    lines = [
        f"`{command}`, {how}; {took}; each arm on the machine its row names (this report: {cpu_name()}, "
        f"{os.cpu_count()} cores).",
        "",
        "| seed | sampler | hypervolume | at 10 / 20 budgeted plans | of width 1.0 / of students (plans) | "
        "measured plans (budgeted) | median trial s: "
        "budgeted / bit-width variants | baseline ms: own / reference | minutes | machine | TPE density |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        *notes,
    ]
    for s in a.samplers:
        if not results[s]:
            continue
        med = statistics.median(results[s].values())
        line = f"- {s}: median hypervolume {med:.2f} (seeds: {', '.join(f'{v:.2f}' for v in results[s].values())})"
        for other in a.samplers:
            paired = [
                results[s][k] / results[other][k]
                for k in results[s]
                if k in results[other] and results[other][k]
            ]
            if other != s and paired:
                line += (
                    f"; {statistics.median(paired):.2f}x {other}, the median of {len(paired)} seed(s)' ratios "
                    f"({', '.join(f'{r:.2f}' for r in paired)})"
                )
        lines.append(line)
    text = "\n".join(lines)
    print(text)
    with open(a.out, "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
