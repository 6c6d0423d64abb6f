"""The sampler policy: which Optuna sampler proposes a study's plans, and the plans it starts from.

``--sampler`` (stored with the study, so every worker that joins runs the same search):

- ``auto`` (default): the start design (the baseline, one single-technique plan per knob, a few
  Latin-hypercube plans), then Optuna's TPE with a joint density over all knobs
  (``multivariate=True``) and the constant liar, for as long as the study runs. Chosen from
  ``benchmarks/samplers.py``: on its problems this beats random search, independent TPE and
  NSGA-II at every budget from 10 to 320 measured plans, and NSGA-II never caught up, so ``auto``
  never switches to it (``SWITCH_TO_NSGA2``; see BENCHMARKS.md for the numbers).
- ``tpe``: the same TPE, after the baseline and the single-technique plans only.
- ``nsga2``: NSGA-II with a population fitted to the first run's budget, a first generation of
  baseline + single-technique + Latin-hypercube plans, and children that repeat a measured plan
  drawn again.
- ``gp``: Optuna's Gaussian-process sampler (log expected hypervolume improvement) after the
  same start design as ``auto``.
- ``random``: random search after the baseline and single-technique plans (a reference).

Parallel workers do not all propose the same plan: each process seeds its sampler differently
(the study's seed, the trials already in it and, for workers, the process), and TPE's constant
liar counts running trials as poor results, so a plan another worker is measuring is not the
most promising one any more. NSGA-II and random search draw from the per-process seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from tradeoff.spaces import Plan, probe_plans, space_filling_plans

SAMPLERS = ("auto", "tpe", "nsga2", "gp", "random")
START_FILL = 5  # Latin-hypercube plans after the baseline and single-technique plans (auto, gp)
SWITCH_TO_NSGA2: int | None = None  # complete trials after which auto would hand over to NSGA-II
REDRAWS = 16  # NSGA-II: children drawn again at most this often while they repeat a measured plan


def fitted_population(n_trials: int) -> int:
    """NSGA-II population for a budget of ``n_trials``: about four generations, 4 to 50 each.
    (Optuna's default of 50 would make any budget under 50 trials a pure random search.)"""
    return max(4, min(50, n_trials // 4))


def start_design(space: dict, sampler: str, *, population: int = 0, seed: int = 0) -> list[tuple[Plan, str]]:
    """The plans a new study measures first, each with its role: the baseline, one plan per
    technique alone (so the front always shows what each achieves on its own), then
    space-filling plans: ``START_FILL`` for the model-based samplers, the rest of the first
    generation for NSGA-II, none for ``tpe`` and ``random``."""
    plans = [(Plan(), "baseline")] + [(p, "single-technique") for p in probe_plans(space)]
    if sampler in ("auto", "gp"):
        n_fill = START_FILL
    elif sampler == "nsga2":
        n_fill = (population or 50) - len(plans)
    else:
        n_fill = 0
    seen = [p for p, _ in plans]
    for plan in space_filling_plans(space, n_fill, seed=seed):
        if plan not in seen:
            plans.append((plan, "space-filling"))
            seen.append(plan)
    return plans


def sampler_seed(seed: int, n_trials: int, who: str = "") -> int:
    """A sampler seed per process: reproducible for one ``search`` (``who`` empty), different for
    a resumed run (more trials) and for each worker (``who``: its host and process)."""
    digest = hashlib.sha256(f"{seed}|{n_trials}|{who}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def make_sampler(
    name: str, *, seed: int | None, population: int = 0, scalarized: bool = False
) -> BaseSampler:
    """The Optuna sampler for ``--sampler name``. A scalarized study (one objective, the weighted
    cost) gets TPE for every model-based choice. Constraints reach every sampler through
    ``trial.set_constraint`` in the runner (feasible plans are preferred)."""
    if name not in SAMPLERS:
        raise ValueError(f"`sampler` must be one of {', '.join(SAMPLERS)}, not {name!r}.")
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2" and not scalarized:
        sampler = optuna.samplers.NSGAIISampler(population_size=population or 50, seed=seed)
        sampler._child_generation_strategy = NoRepeats(sampler._child_generation_strategy)
        return sampler
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=START_FILL)
    # multivariate: one joint density over the knobs, which interact (a narrow student needs less
    # pruning); the start design replaces TPE's own random start-up trials.
    return optuna.samplers.TPESampler(
        multivariate=True, constant_liar=True, n_startup_trials=START_FILL, seed=seed
    )


class NoRepeats:
    """NSGA-II's child generation, drawn again (up to ``REDRAWS`` times) while the child is a plan
    the study has already measured: a repeated child costs a trial and teaches nothing."""

    def __init__(self, inner: Callable[..., dict[str, Any]]) -> None:
        self.inner = inner

    def __call__(self, study: optuna.Study, search_space: dict, parent_population: list[FrozenTrial]) -> dict:
        seen = {
            _key(t.params)
            for t in study._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        }
        child = self.inner(study, search_space, parent_population)
        for _ in range(REDRAWS):
            if _key(child) not in seen:
                break
            child = self.inner(study, search_space, parent_population)
        return child


def _key(params: dict) -> tuple:
    return tuple(sorted((k, round(v, 10) if isinstance(v, float) else v) for k, v in params.items()))


def describe(name: str, *, population: int = 0, start: int = 0) -> str:
    """One line: the sampler of a study and why, printed when a search starts and stored."""
    if name == "auto":
        return (
            f"sampler auto: {start} start plans (baseline, single-technique, space-filling), then "
            "multivariate TPE with the constant liar; NSGA-II did not beat it at any budget up to 320 "
            "plans in benchmarks/samplers.py, so auto does not switch to it"
        )
    if name == "tpe":
        return f"sampler tpe: {start} start plans (baseline, single-technique), then multivariate TPE"
    if name == "nsga2":
        return f"sampler nsga2: population {population}, first generation of {start} seeded plans"
    if name == "gp":
        return f"sampler gp: {start} start plans, then Optuna's Gaussian-process sampler (log EHVI)"
    return f"sampler random: {start} start plans (baseline, single-technique), then random search"
