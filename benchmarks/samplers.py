"""Front quality by sampler, replayed from the tabular benchmark (seconds, not hours).

    python benchmarks/samplers.py                 # 5 seeds, budgets 10/20/40/80
    python benchmarks/samplers.py --quick         # 2 seeds, budgets 10/20, the quick table

Every sampler searches the table's grid (each knob a categorical over its grid values); a trial
looks its plan up in the table. Samplers: NSGA-II as `tradeoff` configures it (population fitted
to the budget, first generation = baseline + one plan per technique + a Latin hypercube),
NSGA-II with Optuna's defaults (population 50, random first generation), random search, and
Optuna's multi-objective TPE. Each run has its own budget (the population is fitted to it, as
`tradeoff search --n-trials N` does).

Hypervolume: every objective turned into one to minimise, relative to the baseline:
accuracy as points of drop (100 x (baseline - accuracy)), size, latency and energy as log10 of
the ratio to the baseline (orders of magnitude). Reference point: (10 points of drop, 0, 0, 0),
i.e. a plan counts only where it is within 10 points of the baseline's accuracy and no bigger,
slower or hungrier than it. Computed with Optuna's own WFG implementation
(`optuna._hypervolume.compute_hypervolume`).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import warnings

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume
from tabular import HERE, TABLE, key, load

from tradeoff.search.config import fitted_population
from tradeoff.spaces import KNOBS, Plan, probe_plans, space_filling_plans, suggest_plan

OBJECTIVES = ("accuracy", "size_bytes", "latency_ms", "energy_mj")
REFERENCE = np.array([10.0, 0.0, 0.0, 0.0])
SAMPLERS = ("nsga2-tradeoff", "nsga2-default", "random", "tpe")
KNOB_OFF = {name: knob.off for name, knob in KNOBS.items()}


def normalised(figures: dict, base: dict) -> np.ndarray:
    return np.array(
        [
            100.0 * (base["accuracy"] - figures["accuracy"]),
            *(math.log10(figures[o] / base[o]) for o in OBJECTIVES[1:]),
        ]
    )


def hypervolume(points: list[np.ndarray]) -> float:
    inside = [p for p in points if np.all(p < REFERENCE)]
    if not inside:
        return 0.0
    return float(compute_hypervolume(np.array(inside), REFERENCE, assume_pareto=False))


def run(table: dict, space: dict, sampler_name: str, budget: int, seed: int) -> list[np.ndarray]:
    """One replayed search; the normalised objective vectors of its trials."""
    base = table["baseline"]
    if sampler_name == "nsga2-tradeoff":
        population = fitted_population(budget)
        sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    elif sampler_name == "nsga2-default":
        sampler = optuna.samplers.NSGAIISampler(seed=seed)
    elif sampler_name == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize", "minimize"], sampler=sampler)
    if sampler_name == "nsga2-tradeoff":
        probes = probe_plans(space)
        seeded = [Plan(), *probes, *space_filling_plans(space, population - 1 - len(probes), seed=seed)]
        for plan in seeded:
            study.enqueue_trial(plan.params(), skip_if_exists=True)
    points = []

    def objective(trial: optuna.Trial) -> list[float]:
        plan = suggest_plan(trial, space)
        figures = table["by_key"][key(plan)]["figures"]
        points.append(normalised(figures, base))
        return [figures[o] for o in OBJECTIVES]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(objective, n_trials=budget)
    return points


def grid_space(table: dict, only: str | None = None) -> dict:
    grid = table["meta"]["grid"]
    return {k: {"choices": list(v) if only in (None, k) else [KNOB_OFF[k]]} for k, v in grid.items()}


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--table")
    ap.add_argument("--seeds", type=int)
    a = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    path = a.table or (os.path.join(HERE, "results", "quick_grid.json") if a.quick else TABLE)
    table = load(path)
    seeds = range(a.seeds or (2 if a.quick else 5))
    budgets = (10, 20) if a.quick else (10, 20, 40, 80)
    space = grid_space(table)
    n_plans = len(table["rows"])
    all_points = [normalised(r["figures"], table["baseline"]) for r in table["rows"]]
    hv_all = hypervolume(all_points)
    out = [
        f"Table: {n_plans} plans ({table['meta']['model']} on {table['meta']['task']}, measured on "
        f"{table['meta']['cpu']}); hypervolume of the whole grid's front {hv_all:.3f} "
        f"(reference point: 10 points of accuracy drop, and the baseline's size, latency and energy; "
        f"size/latency/energy on log10 scales). Median (min-max) over {len(seeds)} seeds:",
        "",
        "| sampler | " + " | ".join(f"{b} trials" for b in budgets) + " |",
        "| --- | " + " | ".join("---" for _ in budgets) + " |",
    ]
    hv = {
        s: {b: [hypervolume(run(table, space, s, b, seed)) for seed in seeds] for b in budgets}
        for s in SAMPLERS
    }
    for s in SAMPLERS:
        out.append(f"| {s} | " + " | ".join(fmt(hv[s][b]) for b in budgets) + " |")
    out.append("")
    for b in budgets:
        ours = statistics.median(hv["nsga2-tradeoff"][b])
        ratios = ", ".join(
            f"{ours / statistics.median(hv[s][b]):.2f}x {s}"
            for s in SAMPLERS[1:]
            if statistics.median(hv[s][b])
        )
        out.append(f"- {b} trials: nsga2-tradeoff's median hypervolume is {ratios}")
    # joint front against each technique alone, at the same budget
    budget = 40 if not a.quick else 20
    out += [
        "",
        f"Joint four-knob search against each technique alone, {budget} trials each (a single technique's "
        "grid is smaller than the budget, so its search is exhaustive: the best it can do on this grid):",
        "",
        "| search | hypervolume | plans on its grid |",
        "| --- | --- | --- |",
        f"| all four knobs (nsga2-tradeoff, median) | {statistics.median(hv['nsga2-tradeoff'].get(budget, [0])):.3f} "
        f"| {n_plans} |",
    ]
    for knob in table["meta"]["grid"]:
        sub = grid_space(table, only=knob)
        plans = [
            Plan(**{k: v["choices"][0] for k, v in sub.items() if k != knob}, **{knob: c})
            for c in sub[knob]["choices"]
        ]
        points = [normalised(table["by_key"][key(p)]["figures"], table["baseline"]) for p in plans]
        out.append(f"| {knob} only | {hypervolume(points):.3f} | {len(plans)} |")
    text = "\n".join(out)
    print(text)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "samplers-quick.md" if a.quick else "samplers.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
