"""The front against published Fashion-MNIST models: a plan under each parameter budget, final-fine-tuned.

    python benchmarks/published.py                     # every part not yet done, then the report
    python benchmarks/published.py --budgets 100000 --n-trials 24 --finetune-steps 3000
    python benchmarks/published.py --report            # the table from the parts already done

Zalando's table of published results (the README of Debian's `dataset-fashion-mnist`) lists
hand-designed networks with their parameter counts: "2 Conv <100K parameters" 92.5 %, "2 Conv+3 FC
~500K parameters" 93.4 %, and so on. For each budget B (default: 100,000 and 500,000 parameters),
what a user would run for a network of at most B parameters:

1. search: `tradeoff search --task fashion-mnist --max-params B --objectives accuracy,params`
   (default space, allocation and sampler; plans over B are cut before training), --n-trials
   plans in a study of its own; a run that stopped resumes with the plans still missing.
   `--objectives accuracy` searches for the most accurate plan within B alone (a study, a part
   of the file and rows of the report of its own, beside the two-objective search's);
2. export: `tradeoff export --max-params B --weights accuracy=1 --finetune-steps S`: the most
   accurate plan within B at search time, trained S more batches (distilling from the teacher on
   the whole training split), then tested once on the 10,000 test images;

and the report sets each exported plan (test accuracy with its 95 % interval, parameters, size
in bytes, ONNX Runtime latency with its threads) beside the published rows read from the
installed README (those that give a parameter count, and ResNet18, MobileNet, AutoML), and the
task's own teacher. Parts are kept in benchmarks/results/published.json and skipped once done
(unless --redo); the studies and exports lie in benchmarks/work/published/ (not committed).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import time

import optuna
from fashion import machine as fashion_machine  # beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "published.json")
REPORT = os.path.join(HERE, "results", "published.md")
WORK = os.path.join(HERE, "work", "published")
README = "/usr/share/doc/dataset-fashion-mnist/README.md.gz"
# the published rows the comparison names besides those with a parameter count
NAMED = ("ResNet18", "MobileNet", "Google AutoML")
OBJECTIVES = "accuracy,params"  # the search's objectives unless --objectives names others


def part_key(budget: int, objectives: str) -> str:
    """The budget's entry in the results file: the budget, with the objectives where not the default."""
    return str(budget) if objectives == OBJECTIVES else f"{budget}:{objectives}"


def study_name(budget: int, objectives: str) -> str:
    """The budget's study: ``params-B``, with the objectives where not the default (as in its key)."""
    return "params-" + part_key(budget, objectives).replace(":", "-").replace(",", "-")


def published_rows(path: str = README) -> list[dict]:
    """The benchmark table's rows that give a parameter count, and the named ones: classifier,
    preprocessing, test accuracy and the parameters the classifier's name states."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise SystemExit(  # noqa: B904 - a one-line error, not a chain
            f"cannot read Zalando's table at {path} ({e}); apt-get install dataset-fashion-mnist"
        )
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not re.fullmatch(r"0?\.\d+", cells[2]):
            continue
        name = cells[0]
        m = re.search(r"([<~]?)\s*([\d.]+)\s*([KM])\s*param", name, re.I)
        if not m and not any(name.startswith(n) for n in NAMED):
            continue
        params = None
        if m:
            params = {
                "bound": m.group(1) or "=",
                "count": round(float(m.group(2)) * (1e3 if m.group(3).upper() == "K" else 1e6)),
            }
        rows.append(
            {
                "classifier": name,
                "preprocessing": cells[1],
                "test_accuracy": float(cells[2]),
                "params": params,
            }
        )
    if not rows:
        raise SystemExit(f"no benchmark rows found in {path}: has the README's table changed?")
    return rows


def tradeoff(*argv: str, log_to: str) -> None:
    cmd = [sys.executable, "-m", "tradeoff.search.cli", *argv]
    print(f"$ tradeoff {' '.join(argv)}  (log: {log_to})", file=sys.stderr, flush=True)
    with open(log_to, "a") as log:
        r = subprocess.run(cmd, cwd=WORK, stdout=log, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise SystemExit(f"tradeoff {' '.join(argv)} exited {r.returncode}: see {log_to}")


def study_of(name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=f"sqlite:///{os.path.join(WORK, 'tradeoff.db')}")
    except KeyError:
        return None


def machine() -> dict:
    import onnxruntime

    return {**fashion_machine(), "onnxruntime": onnxruntime.__version__}


def search(budget: int, n_trials: int, objectives: str = OBJECTIVES) -> dict:
    """Run (or finish) the budget's study; its figures."""
    from tradeoff.search.study.worker import counts

    name = study_name(budget, objectives)
    study = study_of(name)
    missing = n_trials - (counts(study)[0] if study else 0)
    t0 = time.perf_counter()
    if missing > 0:
        tradeoff(
            "search", "--task", "fashion-mnist", "--study-name", name, "--max-params", str(budget),
            "--objectives", objectives, "--n-trials", str(missing), "--seed", "0",
            log_to=os.path.join(WORK, f"{name}.log"),
        )  # fmt: skip
    study = study_of(name)
    trials = study.trials
    states = {s.name.lower(): sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    feasible = [
        t
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("params", budget + 1) <= budget
    ]
    best = max(feasible, key=lambda t: t.user_attrs["accuracy"], default=None)
    return {
        "command": f"tradeoff search --task fashion-mnist --max-params {budget} --objectives {objectives} "
        f"--n-trials {n_trials} --seed 0",
        "objectives": objectives,
        "n_trials": n_trials,
        "states": {k: v for k, v in states.items() if v},
        "feasible_measured": len(feasible),
        "this_run_seconds": round(time.perf_counter() - t0, 1),
        "best_search_time": {
            "trial": best.number,
            "plan": best.user_attrs.get("plan_text"),
            "val_accuracy": best.user_attrs["accuracy"],
            "params": best.user_attrs["params"],
        }
        if best
        else None,
    }


def export(budget: int, steps: int, objectives: str = OBJECTIVES) -> dict:
    """Final-fine-tune and export the most accurate plan within the budget; its record's figures."""
    name = study_name(budget, objectives)
    out = os.path.join(WORK, f"export-{name.removeprefix('params-')}-{steps}")
    t0 = time.perf_counter()
    tradeoff(
        "export", "--study-name", name, "--max-params", str(budget), "--weights", "accuracy=1",
        "--finetune-steps", str(steps), "-o", out, *(["--force"] if os.path.exists(out) else []),
        log_to=os.path.join(WORK, f"{name}-export.log"),
    )  # fmt: skip
    with open(os.path.join(out, "record.json")) as f:
        rec = json.load(f)
    final = rec["final_finetune"]
    m = rec["measured"]
    return {
        "command": f"tradeoff export --study-name {name} --max-params {budget} --weights accuracy=1 "
        f"--finetune-steps {steps} -o DIR",
        "trial": rec["trial"],
        "plan": rec["plan_text"],
        "params": m["params"],
        "flops": m.get("flops"),
        "size_bytes": m["size_bytes"],
        "latency_ms": m["latency_ms"],
        "latency_ratio": m.get("latency_ratio"),
        "latency_threads": m.get("latency_threads"),
        "runtime": rec["runtime"],
        "deployed_file": rec["deployed_file"],
        "final_steps": final.get("steps"),
        "final_seconds": final.get("seconds"),
        "search": final.get("search"),
        "final": final.get("final"),
        "test_accuracy": rec["test_accuracy"],
        "teacher": rec.get("teacher"),
        "baseline": {k: rec["baseline"].get(k) for k in ("accuracy", "params", "size_bytes", "latency_ms")},
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }


def runs(part: dict) -> list[tuple[dict, list[dict]]]:
    """The budget's searches (earlier ones first: a new machine searches again) with their exports,
    by final fine-tune steps."""
    found = [*part.get("earlier", []), part]
    return [
        (r["search"], [r["exports"][k] for k in sorted(r.get("exports", {}), key=int)])
        for r in found
        if "search" in r
    ]


def machine_text(m: dict | None) -> str:
    if not m:
        return "machine not recorded"
    return f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}, optuna {m['optuna']}, ONNX Runtime {m['onnxruntime']}"


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def within(key: str) -> str:
    """'500,000 parameters', and the search's objectives where they are not the default."""
    budget, _, objectives = key.partition(":")
    return f"{int(budget):,} parameters" + (f" (objectives {objectives})" if objectives else "")


def report(results: dict) -> str:
    rows = published_rows()
    budgets = sorted(results.get("budgets", {}).items(), key=lambda kv: (int(kv[0].split(":")[0]), kv[0]))
    machines = []
    for _, part in budgets:
        for s, es in runs(part):
            for m in (s.get("machine"), *(e.get("machine") for e in es)):
                if m and m not in machines:
                    machines.append(m)
    lines = [
        "### The final-fine-tuned front against Zalando's published models",
        "",
        "`python benchmarks/published.py` (" + "; ".join(machine_text(m) for m in machines) + ")",
        "",
        "| model | parameters | test accuracy (95 % interval) | size | latency (ONNX Runtime, batch 1) | source |",
        "|---|---|---|---|---|---|",
    ]
    teacher = None
    for budget, part in budgets:
        for s, es in runs(part):
            for e in es:
                teacher = teacher or e["baseline"]
                lo, hi = e["final"]["test_interval"]
                lines.append(
                    f"| tradeoff, within {within(budget)}: #{e['trial']} `{e['plan']}` | {e['params']:,} | "
                    f"**{pct(e['test_accuracy'])}** ({pct(lo)}-{pct(hi)}) | {e['size_bytes'] / 1e3:,.1f} kB | "
                    f"{e['latency_ms']:.3f} ms ({e['latency_ratio']:.3f}x the teacher's) | search {s['n_trials']} "
                    f"plans, then {e['final_steps']} final steps ({e['final_seconds'] / 60:.1f} min; "
                    f"{(e.get('machine') or {}).get('cpu', 'machine not recorded')}) |"
                )
    if teacher:
        lines.append(
            f"| tradeoff's teacher (resnet18, 12 epochs; its validation accuracy) | {teacher['params']:,} | "
            f"{pct(teacher['accuracy'])} (validation) | {teacher['size_bytes'] / 1e6:,.1f} MB | "
            f"{teacher['latency_ms']:.3f} ms | `python benchmarks/fashion.py teacher` |"
        )
    for r in rows:
        p = r["params"]
        count = (
            f"{'<' if p['bound'] == '<' else '~' if p['bound'] == '~' else ''}{p['count']:,}" if p else "-"
        )
        lines.append(
            f"| {r['classifier']} | {count} | {pct(r['test_accuracy'])} | - | - | Zalando's table "
            f"({r['preprocessing'] or 'no preprocessing'}) |"
        )
    lines.append("")
    for budget, part in budgets:
        for s, es in runs(part):
            for e in es or [None]:
                lines.append(
                    f"- within {within(budget)}: `{s['command']}` ({machine_text(s.get('machine'))}); "
                    f"trials by state {s['states']}, {s['feasible_measured']} measured within the budget"
                    + (f"; `{e['command']}`, {e['wall_seconds'] / 60:.1f} min" if e else "")
                    + (
                        f"; search-time validation {pct(e['search']['val_accuracy'])} -> final "
                        f"{pct(e['final']['val_accuracy'])}, test {pct(e['search']['test_accuracy'])} -> "
                        f"{pct(e['final']['test_accuracy'])}"
                        if e
                        else ""
                    )
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", type=int, nargs="+", default=[100_000, 500_000])
    ap.add_argument("--n-trials", type=int, default=24)
    ap.add_argument(
        "--finetune-steps", type=int, nargs="+", default=[3000], help="one export of the plan per value"
    )
    ap.add_argument(
        "--objectives",
        default=OBJECTIVES,
        help="the search's objectives (default accuracy,params; `accuracy`: the most accurate plan within "
        "the budget alone, kept beside the default's)",
    )
    ap.add_argument("--redo", action="store_true", help="run the parts again even where done")
    ap.add_argument("--report", action="store_true", help="only write the report from the parts done")
    args = ap.parse_args()
    os.makedirs(WORK, exist_ok=True)
    results = {}
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            results = json.load(f)
    results.setdefault("budgets", {})

    def save() -> None:
        with open(RESULTS, "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)
            f.write("\n")

    # each search and export records the machine it ran on (the first version kept one for the file)
    first_machine = results.pop("machine", None)
    for part in results["budgets"].values():
        for rec in [part.get("search"), *part.get("exports", {}).values(), part.get("export")]:
            if rec is not None and first_machine and "machine" not in rec:
                rec["machine"] = first_machine
    if not args.report:
        here = machine()
        for budget in args.budgets:
            part = results["budgets"].setdefault(part_key(budget, args.objectives), {})
            name = study_name(budget, args.objectives)
            if "export" in part:  # a single export, as the first version kept it
                old = part.pop("export")
                part.setdefault("exports", {})[str(old["final_steps"])] = old
            wanted = [s for s in args.finetune_steps if args.redo or str(s) not in part.get("exports", {})]
            if "search" in part and wanted and study_of(name) is None:
                # the study lies in the work folder, which is not committed: on a new machine the
                # search runs again, and the figures of the earlier one stay in the file and report
                print(
                    f"{name}: the study is not in {WORK}; searching again (the earlier search "
                    "and its exports are kept under 'earlier')",
                    file=sys.stderr,
                )
                part.setdefault("earlier", []).append(
                    {"search": part.pop("search"), "exports": part.pop("exports", {})}
                )
            if args.redo or part.get("search", {}).get("n_trials") != args.n_trials:
                part["search"] = dict(search(budget, args.n_trials, args.objectives), machine=here)
                part.pop("exports", None)
                save()
            for steps in args.finetune_steps:
                if args.redo or str(steps) not in part.get("exports", {}):
                    part.setdefault("exports", {})[str(steps)] = dict(
                        export(budget, steps, args.objectives), machine=here
                    )
                    save()
    text = report(results)
    with open(REPORT, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
