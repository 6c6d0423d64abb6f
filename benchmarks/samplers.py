"""Front quality by sampler, replayed on problems built from measured plans (minutes, not days).

    python benchmarks/samplers.py            # every candidate, 10 seeds, 10 to 320 plans (~45 min)
    python benchmarks/samplers.py --problems per-layer   # the per-layer space alone (~3 min)
    python benchmarks/samplers.py --quick    # a smoke run: the quick table, 2 seeds, 10 and 20 plans
    python benchmarks/samplers.py --problems fashion --variants --budgets 10,20,40,80
                                             # as `tradeoff search` runs: bit-width variants on top

Problems (each the whole stepped default space of `tradeoff search`: 7 widths x 17 pruning
ratios x 19 ranks x 4 bit-widths = 9,044 plans):

- ``default``: the measured table (`tabular.py build`: 400 plans of resnet18 on the bundled
  digits task, one fine-tune per structure) interpolated onto every plan of the space,
  multilinearly in (width, pruning, rank) per bit-width, accuracy on its own scale and size,
  latency and energy on log scales. Plans off the grid get measurement noise: accuracy a
  binomial draw's standard deviation over the validation split, latency the table's own
  repeat-to-repeat spread (from its 10th-90th percentiles); the noise is drawn once per plan,
  so a plan measured twice reads the same. The interpolation is checked against the plans
  `tabular.py build` measured live off the grid (the table's ``holdout``): errors printed.
- ``steep``: the same measured size, latency and energy, with a SYNTHETIC accuracy (labelled as
  such): the interpolated accuracy times a retention factor per technique that falls steeply
  with compression (`steep_retention`), as on tasks harder than digits, where accuracy is not
  flat. The front is then long and thin, and a sampler must find it.
- ``per-layer``: the space of ``--granularity allocated`` (the default): width, a pruning budget, a
  rank budget, an average-bits budget (32, 8, 6, 4, 3, 2) and the allocation sharpness in [0, 1]
  on its 0.1 step (7 x 17 x 19 x 6 x 11 = 149,226 plans), every plan per-layer. Built the same way
  from a measured table (`tabular.py allocated`: the task's sensitivity table measured as a study
  measures it, 3 x 3 x 3 x 3 grid points x 6 bit budgets = 486 per-layer plans, each made by the
  search's own `plan_from_params`, one fine-tune per distinct structure), interpolated
  multilinearly in (width, pruning, rank, sharpness) per bit budget, checked against the table's
  off-grid plans measured live. Samplers propose through the search's own `suggest_values`.
- ``per-layer at sharpness 0``: the same table's plans at sharpness 0 and the uniform bit-widths
  (32, 8, 4, 2), whose values are uniform: the global space measured in the same run, proposed by
  `suggest_plan` as a global study proposes. Its front against the per-layer one, both normalised
  to the same baseline, is the allocated-against-global comparison at equal measured plans with
  10 seeds instead of 3.
- ``per-layer-depth`` (and ``fashion-per-layer-depth``): the per-layer space with the depth knob
  searched as `depth.py`'s arm with depth searches it (``--space block_drop=0:0.6:0.2``), from
  `tabular.py allocated --depth`, whose grid holds every value of that knob (measured, not
  interpolated). Beside it, the same table's plans that drop no block, proposed in the space
  without the knob: the front with depth against the front without, at equal measured plans.
- ``fashion`` and ``fashion-per-layer``: the ``default`` and ``per-layer`` problems built the same
  way from tables measured on Fashion-MNIST (`tabular.py build --task fashion-mnist`, `tabular.py
  allocated --task fashion-mnist`), the real task, where compression costs accuracy: the sampler
  policy is chosen there, not only on the saturated digits. Each runs where its table exists.

A replay asks the sampler for plans of the space through the search's own `suggest_plan`;
a plan already measured is answered from the study (as `tradeoff search` does) and does not
count: the budget is measured plans, and a run that repeats 25 plans in a row stops (as the
worker does). ``--variants`` replays what the search does by default (``reuse``): each newly
measured structure queues its other bit-widths (bit budgets at ``allocated``), measured next at
the cost of a quantization and counted outside the budget, so a budget of 40 is 40 plans the
sampler chose and their variants, as `benchmarks/real_search.py` counts its real runs. Budgets
are prefixes of one run for samplers that do not know the budget, and a run of its own for
those that do (NSGA-II's population is fitted to the budget).

Hypervolume: every objective turned into one to minimise, relative to the baseline: accuracy as
points of drop (100 x (baseline - accuracy)), size, latency and energy as log10 of the ratio to
the baseline. Reference point: 10 points of drop and the baseline's size, latency and energy.
Optuna's own WFG implementation (`optuna._hypervolume.compute_hypervolume`).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import random
import statistics
import sys
import time
import warnings
from unittest import mock

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume
from tabular import ALLOCATED_TABLE, HERE, TABLE, load, table_path

from tradeoff.search.study.config import SearchConfig
from tradeoff.search.study.sampler import TPE_STARTUP, CappedTPESampler, make_sampler
from tradeoff.search.study.study import study_sampler, study_start
from tradeoff.search.study.worker import MAX_REPEATS
from tradeoff.spaces import Plan, probe_plans, space_filling_plans, suggest_plan
from tradeoff.spaces.allocation import SHARPNESS, SHARPNESS_STEP, suggest_values
from tradeoff.spaces.quantization import bit_budgets
from tradeoff.spaces.sensitivity import SensitivityTable

OBJECTIVES = ("accuracy", "size_bytes", "latency_ms", "energy_mj")
REFERENCE = np.array([10.0, 0.0, 0.0, 0.0])
BUDGETS = (10, 20, 40, 80, 160, 320)
STRUCTURE = ("student_width", "prune_ratio", "rank_ratio")
ALLOCATED_AXES = (*STRUCTURE, SHARPNESS)


# -- problems ---------------------------------------------------------------------------------


def space_values(space: dict) -> dict[str, list]:
    out = {}
    for k, spec in space.items():
        if "choices" in spec:
            out[k] = list(spec["choices"])
        else:
            n = round((spec["high"] - spec["low"]) / spec["step"])
            out[k] = [round(spec["low"] + i * spec["step"], 10) for i in range(n + 1)]
    return out


def pkey(params: dict, axes: tuple = STRUCTURE) -> tuple:
    return tuple(round(float(params.get(k, 0.0)), 6) for k in (*axes, "weight_bits"))


def steep_retention(w: float, p: float, r: float, bits: int) -> float:
    """SYNTHETIC: the fraction of accuracy a plan keeps on a task where compression hurts. Each
    technique's loss grows with the square of how far it goes, and they compound."""
    bits_keep = {32: 1.0, 16: 1.0, 8: 0.99, 4: 0.93, 2: 0.55}.get(int(bits), 0.5)
    return (1 - 0.35 * (1 - w) ** 2) * (1 - 0.6 * p**2) * (1 - 0.4 * (1 - r) ** 2) * bits_keep


class Problem:
    """Every plan of ``space`` with its figures: measured where the table has the plan,
    interpolated (with measurement noise) elsewhere. ``granularity``: how a study proposes the
    plans (``allocated``: the table's ``sensitivity`` turns budgets into per-layer plans)."""

    def __init__(
        self,
        name: str,
        table: dict,
        space: dict,
        *,
        steep: bool = False,
        noise_seed: int = 0,
        granularity: str = "global",
    ):
        from scipy.interpolate import RegularGridInterpolator

        self.name, self.space, self.granularity = name, space, granularity
        grid = table["meta"]["grid"]
        # knobs beyond the usual ones that the table measured on their own grid axis (block_drop)
        extra = tuple(k for k in grid if k not in (*STRUCTURE, SHARPNESS, "weight_bits"))
        self.axes = (ALLOCATED_AXES if granularity == "allocated" else STRUCTURE) + extra
        self.sensitivity = (
            SensitivityTable.from_dict(table["sensitivity"]) if granularity == "allocated" else None
        )
        axes = [np.array(grid[k], dtype=float) for k in self.axes]
        by_key = {pkey(r["plan"], self.axes): r["figures"] for r in table["rows"]}
        self.interp = {}
        for bits in grid["weight_bits"]:
            for fig in OBJECTIVES:
                values = np.empty([len(a) for a in axes])
                for idx in itertools.product(*(range(len(a)) for a in axes)):
                    v = by_key[(*(round(float(axes[i][j]), 6) for i, j in enumerate(idx)), float(bits))][fig]
                    values[idx] = v if fig == "accuracy" else math.log(v)
                self.interp[(bits, fig)] = RegularGridInterpolator(
                    axes, values, method="linear", bounds_error=False, fill_value=None
                )
        n_val = table["meta"].get("val_size", 360)
        spread = [
            math.log(r["figures"]["latency_p90_ms"] / r["figures"]["latency_p10_ms"]) / 2.563
            for r in table["rows"]
            if r["figures"]["latency_p10_ms"] > 0
        ]
        self.latency_sigma = statistics.median(spread)
        rng = np.random.default_rng(noise_seed)
        values = space_values(self.grid_space())
        structures = np.array(list(itertools.product(*(values[k] for k in self.axes))), dtype=float)
        self.figures: dict[tuple, dict] = {}
        for bits in values["weight_bits"]:
            guessed = {fig: self.interp[(bits, fig)](structures) for fig in OBJECTIVES}
            for i, point in enumerate(structures):
                key = (*(round(float(v), 6) for v in point), float(bits))
                if key in by_key:
                    f = dict(by_key[key])
                else:
                    acc = float(np.clip(guessed["accuracy"][i], 0, 1))
                    f = {o: math.exp(float(guessed[o][i])) for o in OBJECTIVES[1:]}
                    f["accuracy"] = float(
                        np.clip(acc + rng.normal(0, math.sqrt(acc * (1 - acc) / n_val)), 0, 1)
                    )
                    f["latency_ms"] *= math.exp(rng.normal(0, self.latency_sigma))
                if steep:
                    f["accuracy"] *= steep_retention(*key)
                self.figures[key] = f
        self.baseline = self.figures[pkey(Plan().params(), self.axes)]

    def grid_space(self) -> dict:
        """The space's values as the plans' keys hold them: at ``allocated`` the bit budgets and
        the sharpness on its step."""
        if self.granularity != "allocated":
            return self.space
        return {
            **self.space,
            "weight_bits": {"choices": bit_budgets(self.space["weight_bits"]["choices"])},
            SHARPNESS: {"low": 0.0, "high": 1.0, "step": SHARPNESS_STEP},
        }

    def propose(self, trial: optuna.Trial) -> tuple:
        """The key of the plan ``trial`` stands for, asked as the search asks."""
        if self.granularity == "allocated":
            suggest_values(trial, self.space, "allocated", self.sensitivity)
            return pkey(trial.params, self.axes)
        return pkey(suggest_plan(trial, self.space).params(), self.axes)

    def sharpness_zero(self, name: str) -> Problem:
        """The plans of this (allocated) problem at sharpness 0 and the space's own bit-widths,
        proposed as a global study proposes them: the same figures, keyed without the sharpness."""
        bits = {float(b) for b in self.space["weight_bits"]["choices"]}
        return self._slice(name, SHARPNESS, "global", lambda k: k[-1] in bits)

    def without(self, name: str, knob: str) -> Problem:
        """The plans of this problem that leave ``knob`` off (0: block_drop), proposed in the space
        without it: the same figures, keyed without the knob."""
        return self._slice(name, knob, self.granularity, lambda k: True)

    def _slice(self, name: str, knob: str, granularity: str, keep) -> Problem:
        """The plans at ``knob`` = 0 (and ``keep(key)``), keyed and proposed without ``knob``."""
        at = self.axes.index(knob)
        view = object.__new__(Problem)
        view.name, view.granularity = name, granularity
        view.space = {k: v for k, v in self.space.items() if k != knob}
        view.axes = tuple(a for a in self.axes if a != knob)
        if granularity == "global":
            view.axes = tuple(a for a in view.axes if a != SHARPNESS)
        drop = {at} | (
            {self.axes.index(SHARPNESS)} if SHARPNESS in self.axes and SHARPNESS not in view.axes else set()
        )
        view.sensitivity = self.sensitivity if granularity == "allocated" else None
        view.interp, view.latency_sigma = None, self.latency_sigma
        view.figures = {
            tuple(v for i, v in enumerate(k) if i not in drop): f
            for k, f in self.figures.items()
            if all(k[i] == 0.0 for i in drop) and keep(k)
        }
        view.baseline = self.baseline
        return view

    def interpolate(self, key: tuple) -> dict:
        point = np.array([key[:-1]])
        out = {}
        for fig in OBJECTIVES:
            v = float(self.interp[(int(key[-1]), fig)](point)[0])
            out[fig] = v if fig == "accuracy" else math.exp(v)
        return out

    def normalised(self, f: dict) -> np.ndarray:
        return normalise(f, self.baseline)


def normalise(f: dict, base: dict) -> np.ndarray:
    """A plan's figures as four values to minimise: accuracy drop in points, and log10 of the
    size, latency and energy ratios to the baseline."""
    return np.array(
        [100.0 * (base["accuracy"] - f["accuracy"]), *(math.log10(f[o] / base[o]) for o in OBJECTIVES[1:])]
    )


def interpolation_error(table: dict, problem: Problem) -> str:
    """The interpolated figures of the plans measured live off the grid, against the live ones."""
    rows = table.get("holdout") or []
    if not rows:
        return "No off-grid plans were measured with this table: the interpolation is unchecked."
    acc, size, lat = [], [], []
    for r in rows:
        guess = problem.interpolate(pkey(r["plan"], problem.axes))
        f = r["figures"]
        acc.append(100 * abs(guess["accuracy"] - f["accuracy"]))
        size.append(abs(math.log(guess["size_bytes"] / f["size_bytes"])))
        lat.append(abs(math.log(guess["latency_ms"] / f["latency_ms"])))
    pct = lambda xs: f"{100 * (math.exp(statistics.median(xs)) - 1):.1f} %"  # noqa: E731
    return (
        f"Interpolation against {len(rows)} plans measured live off the grid: median absolute error "
        f"{statistics.median(acc):.2f} accuracy points (max {max(acc):.2f}; one validation image is "
        f"{100 / table['meta'].get('val_size', 360):.2f}), size {pct(size)}, latency {pct(lat)} (the "
        f"table's own repeat-to-repeat latency spread: sigma {100 * problem.latency_sigma:.1f} %)."
    )


# -- candidates -------------------------------------------------------------------------------


def product(sampler: str):
    """Exactly what `tradeoff search --sampler SAMPLER --seed SEED --n-trials BUDGET` builds: its
    configuration, its start design, its sampler (seeded as a search seeds it)."""

    def make(space: dict, seed: int, budget: int, granularity: str = "global"):
        config = SearchConfig(space=space, seed=seed, sampler=sampler, granularity=granularity)
        config = config.validated(n_trials=budget)
        return study_sampler(config), [params for params, _ in study_start(config)]

    return make


def designed(sampler: str, probes: bool = True, fill: int = 0):
    """``make_sampler(sampler)`` after the baseline, the single-technique plans (``probes``) and
    ``fill`` Latin-hypercube plans: the start designs `auto` was chosen from."""

    def make(space: dict, seed: int, budget: int, granularity: str = "global"):
        plans = [Plan()] + (probe_plans(space) if probes else [])
        plans += [p for p in space_filling_plans(space, fill, seed=seed) if p not in plans]
        return make_sampler(sampler, seed=seed), [p.params() for p in plans]

    return make


def history_capped(cap: int):
    """`tradeoff` (``auto``) with its TPE reading only the front and the last ``cap`` finished
    trials (``CappedTPESampler``): the default caps at 1,000, which no replayed budget reaches, so
    a small cap shows what the cap costs once it applies."""

    def make(space: dict, seed: int, budget: int, granularity: str = "global"):
        sampler, plans = product("auto")(space, seed, budget, granularity)
        sampler.cap = cap
        return sampler, plans

    return make


class Mixed(optuna.samplers.BaseSampler):
    """CANDIDATE: ``inner`` for most trials, a uniform random draw for one trial in ``every`` (drawn
    per trial): model-based search with a fixed share of exploration."""

    def __init__(self, inner: optuna.samplers.BaseSampler, every: int, seed: int) -> None:
        self.inner, self.every, self.seed = inner, every, seed
        self.random = optuna.samplers.RandomSampler(seed=seed + 1)

    def _random(self, trial) -> bool:
        # a draw per trial (seeded by its number), not every n-th number: with bit-width variants
        # queued after each new structure, the sampler's own trials fall on every 4th number
        return random.Random(self.seed * 1_000_003 + trial.number).random() < 1 / self.every

    def infer_relative_search_space(self, study, trial):
        return {} if self._random(trial) else self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return {} if self._random(trial) else self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        which = self.random if self._random(trial) else self.inner
        return which.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial):
        self.inner.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self.inner.after_trial(study, trial, state, values)


def auto_start(sampler_for):
    """CANDIDATES: `tradeoff`'s start design (as `--sampler auto` builds it), then the sampler
    ``sampler_for(auto's sampler, seed)`` returns."""

    def make(space: dict, seed: int, budget: int, granularity: str = "global"):
        sampler, plans = product("auto")(space, seed, budget, granularity)
        return sampler_for(sampler, seed), plans

    return make


def top_width_start(n_top: int):
    """CANDIDATE: `tradeoff`'s start design with ``n_top`` of its Latin-hypercube plans at the
    widest student (1.0: the teacher's own weights), the others' widths below it."""

    def make(space: dict, seed: int, budget: int, granularity: str = "global"):
        sampler, plans = product("auto")(space, seed, budget, granularity)
        wide = space["student_width"]["high"]
        for i, params in enumerate(plans[1:]):
            if i < n_top:
                params["student_width"] = wide
            elif params.get("student_width", wide) >= wide:
                params["student_width"] = wide - space["student_width"]["step"]
        return sampler, plans

    return make


def short_start(fill: int):
    """CANDIDATE: `tradeoff` with a shorter start design: the baseline and ``fill`` Latin-hypercube
    plans (the default: 9; an allocated study's sharpness spread over them as it spreads it over 9),
    so TPE takes over sooner."""

    def make(space: dict, seed: int, budget: int, granularity: str = "global"):
        with mock.patch("tradeoff.search.study.sampler.START_FILL", fill):
            return product("auto")(space, seed, budget, granularity)

    return make


def tpe_gamma(fraction: float):
    """CANDIDATE: `tradeoff` with TPE's "good" share of trials at ``fraction`` (Optuna's default:
    10 %, at most 25 trials)."""
    return auto_start(
        lambda _auto, seed: CappedTPESampler(
            multivariate=True,
            constant_liar=True,
            n_startup_trials=TPE_STARTUP,
            seed=seed,
            gamma=lambda n: min(math.ceil(fraction * n), 25),
        )
    )


def plain(sampler_fn):
    return lambda space, seed, budget, granularity="global": (sampler_fn(seed), [])


CANDIDATES = {
    # name: (factory(space, seed, budget) -> (sampler, enqueued plans), knows its budget)
    "tradeoff": (product("auto"), False),
    "random": (plain(lambda s: optuna.samplers.RandomSampler(seed=s)), False),
    "tpe": (plain(lambda s: optuna.samplers.TPESampler(seed=s)), False),
    "tpe multivariate": (plain(lambda s: optuna.samplers.TPESampler(seed=s, multivariate=True)), False),
    "mv-tpe: base + probes (--sampler tpe)": (product("tpe"), False),
    "mv-tpe: base + probes + 5 lhs": (designed("tpe", fill=5), False),
    "mv-tpe: base + 4 lhs": (designed("tpe", probes=False, fill=4), False),
    "gp: base + 9 lhs (--sampler gp)": (product("gp"), False),
    "nsga2 (--sampler nsga2)": (product("nsga2"), True),
    "nsga2 (Optuna default)": (plain(lambda s: optuna.samplers.NSGAIISampler(seed=s)), False),
    "tradeoff (history cap 40)": (history_capped(40), False),
    "tradeoff (history cap 80)": (history_capped(80), False),
    "tradeoff + 1 in 3 random": (auto_start(lambda auto, seed: Mixed(auto, 3, seed)), False),
    "tradeoff + 1 in 2 random": (auto_start(lambda auto, seed: Mixed(auto, 2, seed)), False),
    "tradeoff: 4 of 9 start plans at width 1": (top_width_start(4), False),
    "tradeoff: gamma 25 %": (tpe_gamma(0.25), False),
    "tradeoff: 4 start plans": (short_start(4), False),
    "tradeoff: 2 start plans": (short_start(2), False),
    # the policy until 2026-12-05 wherever the granularity: one joint density over the knobs (a
    # global study's `tradeoff` still runs it; an allocated one's now runs one density per knob)
    "tradeoff: start design + joint TPE": (
        auto_start(lambda _auto, seed: make_sampler("auto", seed=seed, joint=True)),
        False,
    ),
    # Optuna's independent TPE (one density per knob) in place of the joint one
    "tradeoff: start design + independent TPE": (
        auto_start(
            lambda _auto, seed: optuna.samplers.TPESampler(
                n_startup_trials=TPE_STARTUP, constant_liar=True, seed=seed
            )
        ),
        False,
    ),
}
QUICK = ("tradeoff", "random", "tpe", "nsga2 (--sampler nsga2)")
# Optuna's GP sampler refits its model on every trial (tens of seconds per proposal at 20-40
# trials on 2 cores): replayed up to this budget only.
SLOW_ABOVE = {"gp: base + 9 lhs (--sampler gp)": 20}


def replay(
    problem: Problem, factory, seed: int, budget: int, variants: bool = False
) -> list[tuple[int, np.ndarray]]:
    """The normalised figures of the plans one replayed search measured, in order, each with the
    count of budgeted plans measured by then. ``variants``: as `tradeoff search` runs (its
    default, ``reuse``), every newly measured structure queues its other bit-widths (bit budgets
    at ``allocated``), which are measured next and use up none of the budget; the last plan's
    variants are measured too, as the worker measures queued variants before it stops."""
    sampler, enqueued = factory(problem.space, seed, budget, problem.granularity)
    directions = ["maximize", "minimize", "minimize", "minimize"]
    study = optuna.create_study(directions=directions, sampler=sampler)
    for params in enqueued:
        study.enqueue_trial(params, skip_if_exists=True)
    bit_choices = problem.grid_space()["weight_bits"]["choices"]
    measured: dict[tuple, list[float]] = {}
    structures: set[tuple] = set()
    queued: set[tuple] = set()
    points, counted, repeats = [], 0, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while (counted < budget or queued) and repeats < MAX_REPEATS:
            trial = study.ask()
            key = problem.propose(trial)
            sibling = key in queued
            queued.discard(key)
            if key in measured:
                repeats += not sibling
                study.tell(trial, measured[key])
                continue
            repeats = 0
            f = problem.figures[key]
            measured[key] = [f[o] for o in OBJECTIVES]
            counted += not sibling
            points.append((counted, problem.normalised(f)))
            study.tell(trial, measured[key])
            if variants and key[:-1] not in structures:
                for bits in bit_choices:
                    other = (*key[:-1], float(bits))
                    if other not in measured and other not in queued:
                        queued.add(other)
                        study.enqueue_trial(dict(trial.params, weight_bits=bits))
            structures.add(key[:-1])
    return points


def upto(points: list[tuple[int, np.ndarray]], budget: int) -> list[np.ndarray]:
    """The points a replay had measured when its ``budget``-th budgeted plan (and its variants)
    was measured."""
    return [p for n, p in points if n <= budget]


def hypervolume(points: list[np.ndarray]) -> float:
    inside = [p for p in points if np.all(p < REFERENCE)]
    if not inside:
        return 0.0
    return float(compute_hypervolume(np.array(inside), REFERENCE, assume_pareto=False))


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return float(med), float(q1), float(q3)


def evaluate(
    problem: Problem, names, seeds, budgets, log, variants: bool = False
) -> dict[str, dict[int, list[float]]]:
    hv: dict[str, dict[int, list[float]]] = {}
    for name in names:
        factory, knows_budget = CANDIDATES[name]
        cap = SLOW_ABOVE.get(name, max(budgets))
        mine = [b for b in budgets if b <= cap]
        hv[name] = {b: [] for b in mine}
        t0 = time.perf_counter()
        for seed in seeds:
            if knows_budget:
                for b in mine:
                    hv[name][b].append(hypervolume(upto(replay(problem, factory, seed, b, variants), b)))
            else:
                points = replay(problem, factory, seed, max(mine), variants)
                for b in mine:
                    hv[name][b].append(hypervolume(upto(points, b)))
        log(f"{problem.name}: {name} replayed in {time.perf_counter() - t0:.0f} s")
    return hv


def table_lines(problem: Problem, hv: dict, budgets, n_seeds: int) -> list[str]:
    all_hv = hypervolume([problem.normalised(f) for f in problem.figures.values()])
    lines = [
        f"### {problem.name}: hypervolume, median [interquartile range] over {n_seeds} seeds "
        f"(whole space's front: {all_hv:.2f})",
        "",
        "| sampler | " + " | ".join(f"{b} plans" for b in budgets) + " |",
        "| --- | " + " | ".join("---" for _ in budgets) + " |",
    ]
    for name, by_budget in hv.items():
        cells = []
        for b in budgets:
            if b not in by_budget:
                cells.append("-")
                continue
            med, q1, q3 = quartiles(by_budget[b])
            cells.append(f"{med:.2f} [{q1:.2f}-{q3:.2f}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    ours = hv["tradeoff"]
    for ref in ("random", "tpe"):
        if ref in hv:
            ratios = ", ".join(
                f"{statistics.median(ours[b]) / statistics.median(hv[ref][b]):.2f}x at {b}"
                for b in budgets
                if b in ours and statistics.median(hv[ref][b]) > 0
            )
            lines.append(f"- `tradeoff` / `{ref}` (ratio of medians): {ratios}")
    return lines


# the samplers the per-layer problems replay unless `--only` names others (every candidate takes
# the study's granularity)
PER_LAYER = ("tradeoff", "random", "tpe", "nsga2 (--sampler nsga2)")


def paired_ratio(ours: dict, theirs: dict, budgets) -> str:
    """Per budget: the ratio of medians and the interquartile range of the per-seed ratios."""
    cells = []
    for b in budgets:
        if b not in ours or b not in theirs or not statistics.median(theirs[b]):
            continue
        per_seed = [x / y for x, y in zip(ours[b], theirs[b]) if y > 0]
        med, q1, q3 = quartiles(per_seed)
        cells.append(
            f"{statistics.median(ours[b]) / statistics.median(theirs[b]):.2f}x at {b} "
            f"(per seed: median {med:.2f}, IQR {q1:.2f}-{q3:.2f})"
        )
    return "; ".join(cells)


def per_layer_lines(
    table: dict, names, seeds, budgets, log, name: str = "per-layer", variants: bool = False
) -> list[str]:
    names = list(names) if "tradeoff" in names else ["tradeoff", *names]  # the ratios below need it
    space = {k: dict(v) for k, v in SearchConfig().validated().space.items()}
    problem = Problem(name, table, space, granularity="allocated")
    uniform = problem.sharpness_zero("per-layer at sharpness 0 (uniform values: the global space)")
    meta = table["meta"]
    out = [
        f"The {name} problem: {len(table['rows'])} per-layer plans of {meta['model']} on {meta['task']} "
        f"({meta['cpu']}, {meta.get('threads')} thread(s), {meta['created']}; {meta['structures_fine_tuned']} "
        f"structures fine-tuned, sensitivity pass {meta['sensitivity']['seconds']:.0f} s, metric "
        f"{meta['sensitivity']['metric']}), interpolated onto the {len(problem.figures)} plans of the "
        f"allocated space; its sharpness-0 slice has {len(uniform.figures)} plans.",
        "",
        interpolation_error(table, problem),
        "",
    ]
    return out + against(
        (problem, names, "per-layer"),
        (uniform, ["tradeoff"], "at sharpness 0"),
        "allocated against global",
        seeds,
        budgets,
        log,
        variants,
    )


def against(ours: tuple, theirs: tuple, what: str, seeds, budgets, log, variants: bool) -> list[str]:
    """Two problems built from one table's measurements (a space and a slice of it), each
    (problem, candidates, label): their replay tables, `tradeoff`'s hypervolume on the first
    against the second, and their whole fronts."""
    hv = [evaluate(problem, names, seeds, budgets, log, variants) for problem, names, _ in (ours, theirs)]
    out = []
    for (problem, _, _), h in zip((ours, theirs), hv):
        out += table_lines(problem, h, budgets, len(seeds)) + [""]
    whole = [hypervolume([q.normalised(f) for f in q.figures.values()]) for q in (ours[0], theirs[0])]
    return out + [
        f"- {what}, `tradeoff` on both (the same measurements, the same baseline): "
        + paired_ratio(hv[0]["tradeoff"], hv[1]["tradeoff"], budgets),
        f"- the best either space can do (its whole front): {whole[0]:.2f} {ours[2]} against {whole[1]:.2f} "
        f"{theirs[2]}, {whole[0] / whole[1]:.2f}x",
    ]


def depth_lines(
    table: dict, names, seeds, budgets, log, name: str = "per-layer-depth", variants: bool = False
) -> list[str]:
    """The per-layer problem with the depth knob (a table of `tabular.py allocated --depth`), and
    the same table's plans that drop no block proposed in the space without it."""
    names = list(names) if "tradeoff" in names else ["tradeoff", *names]  # the ratios below need it
    meta = table["meta"]
    knob = "block_drop"
    space = {k: dict(v) for k, v in SearchConfig().validated().space.items()}
    space[knob] = dict(meta["config"]["space"][knob])
    problem = Problem(name, table, space, granularity="allocated")
    flat = problem.without(f"{name} without {knob} (the same table's plans that drop no block)", knob)
    out = [
        f"The {name} problem: {len(table['rows'])} per-layer plans of {meta['model']} on {meta['task']} "
        f"({meta['cpu']}, {meta.get('threads')} thread(s), {meta['created']}; {meta['structures_fine_tuned']} "
        f"structures fine-tuned; {knob} on the grid at {', '.join(f'{v:g}' for v in meta['grid'][knob])}), "
        f"interpolated onto the {len(problem.figures)} plans of the allocated space with {knob} "
        f"{space[knob]}; without it, {len(flat.figures)} plans.",
        "",
        interpolation_error(table, problem),
        "",
    ]
    return out + against(
        (problem, names, f"with {knob}"),
        (flat, names, "without"),
        f"with {knob} against without",
        seeds,
        budgets,
        log,
        variants,
    )


def global_lines(
    table: dict, wanted: set, names, seeds, budgets, log, first: str = "default", variants: bool = False
) -> list[str]:
    """The global problems of ``table``: ``first`` (its measured figures) and, on the digits table,
    ``steep`` (its synthetic accuracy)."""
    space = {k: dict(v) for k, v in SearchConfig().validated().space.items()}
    problems = [Problem(first, table, space)]
    problems += [Problem("steep", table, space, steep=True)] if first == "default" else []
    meta = table["meta"]
    out = [
        f"Problems built from {len(table['rows'])} measured plans of {meta['model']} on {meta['task']} "
        f"({meta['cpu']}, {meta.get('threads')} thread(s), {meta['created']}), interpolated onto the "
        f"{len(problems[0].figures)} plans of the default space."
        + (
            " The `steep` problem's accuracy is synthetic (see `steep_retention`)."
            if len(problems) > 1
            else ""
        )
        + (
            " Budgets count the plans the sampler chose; each new structure's other bit-widths are "
            "measured on top, as `tradeoff search` does (`--variants`)."
            if variants
            else " Budgets count measured plans."
        ),
        "",
        interpolation_error(table, problems[0]),
        "",
    ]
    for problem in (p for p in problems if p.name in wanted):
        hv = evaluate(problem, names, seeds, budgets, log, variants)
        out += table_lines(problem, hv, budgets, len(seeds)) + [""]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--table")
    ap.add_argument("--allocated-table", help=f"the per-layer table (default {ALLOCATED_TABLE})")
    ap.add_argument(
        "--problems",
        default="default,steep,per-layer,fashion,fashion-per-layer,per-layer-depth,fashion-per-layer-depth",
        help="comma-separated problems to run (fashion..., ...-depth: where their tables are measured)",
    )
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--budgets", help=f"comma-separated budgets (default {','.join(map(str, BUDGETS))})")
    ap.add_argument("--only", help="comma-separated candidates (default: all)")
    ap.add_argument(
        "--variants",
        action="store_true",
        help="replay as `tradeoff search` runs: each new structure's other bit-widths measured on "
        "top of the budget (its default, reuse)",
    )
    a = ap.parse_args()
    wanted = set(a.problems.split(","))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    seeds = range(a.seeds or (2 if a.quick else 10))
    budgets = tuple(int(b) for b in a.budgets.split(",")) if a.budgets else (10, 20) if a.quick else BUDGETS
    names = a.only.split(",") if a.only else (QUICK if a.quick else tuple(CANDIDATES))
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    out: list[str] = []
    if wanted & {"default", "steep"}:
        path = a.table or (os.path.join(HERE, "results", "quick_grid.json") if a.quick else TABLE)
        if not os.path.exists(path) and a.quick:
            sys.exit(f"{path}: run `python benchmarks/tabular.py build --quick` first")
        out += global_lines(load(path), wanted, names, seeds, budgets, log, variants=a.variants)
    quick = os.path.join(HERE, "results", "quick_allocated.json")
    allocated = a.allocated_table or (quick if a.quick else ALLOCATED_TABLE)
    if "per-layer" in wanted and os.path.exists(allocated):
        per_layer = names if a.only else [n for n in names if n in PER_LAYER]
        out += per_layer_lines(load(allocated), per_layer, seeds, budgets, log, variants=a.variants) + [""]
    elif "per-layer" in wanted:
        out += [
            f"No per-layer problem: {allocated} is missing (`python benchmarks/tabular.py allocated`).",
            "",
        ]
    for problem, granularity in (("fashion", "global"), ("fashion-per-layer", "allocated")):
        path = table_path("fashion-mnist", granularity)
        if problem not in wanted or a.quick:
            continue
        if not os.path.exists(path):
            how = "build" if granularity == "global" else "allocated"
            out += [
                f"No {problem} problem: {path} is missing (`python benchmarks/tabular.py {how} "
                "--task fashion-mnist --threads 2`).",
                "",
            ]
        elif granularity == "global":
            out += global_lines(
                load(path), wanted, names, seeds, budgets, log, first=problem, variants=a.variants
            )
        else:
            per_layer = names if a.only else [n for n in names if n in PER_LAYER]
            out += per_layer_lines(
                load(path), per_layer, seeds, budgets, log, name=problem, variants=a.variants
            )
            out += [""]
    for problem, task in (("per-layer-depth", "digits"), ("fashion-per-layer-depth", "fashion-mnist")):
        path = table_path(task, "allocated", depth=True)
        if a.quick and task == "digits":
            path = os.path.join(HERE, "results", "quick_allocated_depth.json")
        if problem not in wanted or (a.quick and task != "digits"):
            continue
        if not os.path.exists(path):
            out += [
                f"No {problem} problem: {path} is missing (`python benchmarks/tabular.py allocated --depth"
                f"{' --quick' if a.quick else '' if task == 'digits' else ' --task ' + task}`).",
                "",
            ]
            continue
        per_layer = names if a.only else [n for n in names if n in PER_LAYER]
        out += depth_lines(load(path), per_layer, seeds, budgets, log, name=problem, variants=a.variants)
        out += [""]
    out.append(f"Replayed in {time.perf_counter() - t0:.0f} s.")
    text = "\n".join(out)
    print(text)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    # a run of some problems only does not overwrite the whole run's file
    every = {
        "default",
        "steep",
        "per-layer",
        "fashion",
        "fashion-per-layer",
        "per-layer-depth",
        "fashion-per-layer-depth",
    }
    part = "" if wanted >= every else "-" + "-".join(sorted(wanted))
    name = f"samplers{part}{'-variants' if a.variants else ''}{'-quick' if a.quick else ''}.md"
    with open(os.path.join(HERE, "results", name), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
