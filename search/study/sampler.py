"""The sampler policy: which Optuna sampler proposes a study's plans, and the plans it starts from.

``--sampler`` (stored with the study, so every worker that joins runs the same search):

- ``auto`` (default): the start design (the baseline and 9 Latin-hypercube plans), then Optuna's
  TPE with the constant liar, for as long as the study runs. Chosen from
  ``benchmarks/samplers.py`` (BENCHMARKS.md): of the start designs tried, this one is the only
  one at least even with random search at 10 plans on both digits problems (the
  single-technique plans add almost no hypervolume, so they are not part of it; 4 plans instead
  of 9 gain 1.1-1.3x where ``block_drop`` is searched and are level or behind without it), and NSGA-II
  stayed behind TPE at every budget up to 320 plans, so ``auto`` never hands over to it.
  TPE's density depends on the granularity (``tpe_density``, stored with the study): a
  ``global`` study's TPE fits one joint density over its knobs (``multivariate=True``: a narrow
  student needs less pruning; independent densities lost 0.73-0.93x on the steep digits
  problem), an ``allocated`` or ``layer`` study's one density per knob: its knobs are budgets
  that the allocation already spreads over the layers by measured sensitivity, and on the
  Fashion-MNIST per-layer table the joint density fell behind random search (0.92x at 40
  plans) where independent densities reached 1.13x the joint one, level with it on digits
  (0.99-1.00x).
- ``tpe``: the same TPE after the baseline and one plan per technique alone (so the front shows
  what each technique achieves by itself).
- ``nsga2``: NSGA-II with a population fitted to the first run's budget, a first generation of
  the baseline, the single-technique plans and Latin-hypercube plans, and children that repeat
  a measured plan drawn again.
- ``gp``: Optuna's Gaussian-process sampler (log expected hypervolume improvement) after the
  same start design as ``auto``; seconds of model fitting per proposal.
- ``random``: random search after the baseline and the single-technique plans (a reference).

Parallel workers do not all propose the same plan: each process seeds its sampler differently
(the study's seed, the trials already in it and, for workers, the process), proposes under the
study lock (``run_worker``'s ``propose``), and TPE's constant liar counts running trials as poor
results, so a plan another worker is measuring is not the most promising one any more. NSGA-II
and random search draw from the per-process seed. A plan proposed all the same while a running
trial measures it waits for that trial and is answered from it (``worker.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

SAMPLERS = ("auto", "tpe", "nsga2", "gp", "random")
TPE_DENSITIES = ("joint", "independent")
START_FILL = 9  # Latin-hypercube plans after the baseline (auto, gp)
TPE_STARTUP = 5  # complete trials before TPE fits its densities (auto's start design is longer)
REDRAWS = 16  # NSGA-II: children drawn again at most this often while they repeat a measured plan
# TPE's proposal reads every trial and sorts them into non-domination layers: 42 ms at 1,000
# complete trials, 625 ms at 5,000 (benchmarks/scale.py). Past this many it reads the front and
# the most recent trials only (CappedTPESampler).
HISTORY_CAP = 1000


def default_tpe_density(granularity: str) -> str:
    """TPE's density for a study of ``granularity`` (module docstring): joint over the knobs of a
    global study, one per knob where the allocation sets values layer by layer."""
    return "joint" if granularity == "global" else "independent"


def fitted_population(n_trials: int) -> int:
    """NSGA-II population for a budget of ``n_trials``: about four generations, 4 to 50 each.
    (Optuna's default of 50 would make any budget under 50 trials a pure random search.)"""
    return max(4, min(50, n_trials // 4))


def start_design(space: dict, sampler: str, *, population: int = 0, seed: int = 0) -> list[tuple[Any, str]]:
    """The plans a new study measures first, each with its role: the baseline, then for
    ``auto`` and ``gp`` ``START_FILL`` space-filling plans; for the others one plan per technique
    alone (so the front shows what each achieves on its own), and for NSGA-II space-filling plans
    up to its first generation."""
    from tradeoff.spaces import Plan, probe_plans, space_filling_plans  # torch: only where plans are made

    plans = [(Plan(), "baseline")]
    if sampler in ("auto", "gp"):
        n_fill = START_FILL
    else:
        plans += [(p, "single-technique") for p in probe_plans(space)]
        n_fill = (population or 50) - len(plans) if sampler == "nsga2" else 0
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
    name: str, *, seed: int | None, population: int = 0, scalarized: bool = False, joint: bool = True
) -> BaseSampler:
    """The Optuna sampler for ``--sampler name``. A scalarized study (one objective, the weighted
    cost) gets TPE for every model-based choice; ``joint``: TPE's one density over all knobs,
    else one per knob. Constraints reach every sampler through ``trial.set_constraint`` in the
    runner (feasible plans are preferred)."""
    if name not in SAMPLERS:
        raise ValueError(f"`sampler` must be one of {', '.join(SAMPLERS)}, not {name!r}.")
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2" and not scalarized:
        sampler = optuna.samplers.NSGAIISampler(population_size=population or 50, seed=seed)
        sampler._child_generation_strategy = NoRepeats(sampler._child_generation_strategy)
        return sampler
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=TPE_STARTUP)
    # the start design replaces TPE's own random start-up trials
    return CappedTPESampler(multivariate=joint, constant_liar=True, n_startup_trials=TPE_STARTUP, seed=seed)


class CappedTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPE, reading at most ``cap`` finished trials plus the study's Pareto front (and
    every running trial, for the constant liar) once a study is larger than ``cap``. The front
    is where TPE's "good" density comes from (its best 25 trials by non-domination rank), the
    recent trials are where the search is now; what is dropped is the old, dominated past,
    whose only use is the "bad" density. Below the cap it is TPE itself, proposal for proposal.
    The front is kept up to date incrementally (each new complete trial is compared with the
    front alone), so a proposal costs about what it costs at ``cap`` trials, whatever the
    study's size."""

    def __init__(self, *args, cap: int = HISTORY_CAP, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cap = cap
        self._front = ParetoFront()

    def _sample(self, study, trial, search_space):
        return super()._sample(_CappedView(study, self), trial, search_space)

    def capped(self, study: optuna.Study, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        """``trials`` as this sampler reads them: all of them up to ``cap`` finished ones, else
        the front of the complete ones, then the last ``cap`` finished and the running ones."""
        finished = [t for t in trials if t.state != TrialState.RUNNING]
        if len(finished) <= self.cap:
            return trials
        self._front.update(study.directions, [t for t in finished if t.state == TrialState.COMPLETE])
        front = self._front.numbers()
        recent = {t.number for t in finished[-self.cap :]} - front
        # the front first, so its trials keep their places while the recent window slides: TPE's
        # tie-break among them (a hypervolume subset selection, Optuna caches it by the places and
        # values of the tied trials) is then solved again only when the front changes
        return [t for t in trials if t.number in front] + [
            t for t in trials if t.state == TrialState.RUNNING or t.number in recent
        ]


class _CappedView:
    """The study as :class:`CappedTPESampler` shows it to TPE: the same study, fewer trials."""

    def __init__(self, study: optuna.Study, sampler: CappedTPESampler) -> None:
        self._study, self._sampler = study, sampler

    def __getattr__(self, name: str):
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False) -> list[FrozenTrial]:
        trials = self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        return self._sampler.capped(self._study, trials)


class ParetoFront:
    """The non-dominated complete trials of a study, updated with each trial not seen before
    (a trial that finishes late, out of number order, is still taken in)."""

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self._numbers: list[int] = []
        self._values = np.empty((0, 0))

    def numbers(self) -> set[int]:
        return set(self._numbers)

    def update(self, directions, trials: list[FrozenTrial]) -> None:
        sign = np.array([-1.0 if d == optuna.study.StudyDirection.MAXIMIZE else 1.0 for d in directions])
        for t in trials:
            if t.number in self._seen or t.values is None:
                continue
            self._seen.add(t.number)
            v = np.asarray(t.values, dtype=float) * sign  # every objective minimised
            if self._values.size:
                if np.any(np.all(self._values <= v, axis=1) & np.any(self._values < v, axis=1)):
                    continue  # dominated by the front
                stays = ~(np.all(v <= self._values, axis=1) & np.any(v < self._values, axis=1))
                self._values = self._values[stays]
                self._numbers = [n for n, keep in zip(self._numbers, stays) if keep]
                self._values = np.vstack([self._values, v])
            else:
                self._values = v[None, :]
            self._numbers.append(t.number)


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


def describe(name: str, *, population: int = 0, start: int = 0, density: str = "joint") -> str:
    """One line: the sampler of a study and why, printed when a search starts and stored."""
    tpe = "multivariate TPE" if density == "joint" else "TPE with one density per knob"
    if name == "auto":
        return (
            f"sampler auto: {start} start plans (the baseline and a Latin hypercube), then {tpe} "
            "and the constant liar; NSGA-II stayed behind it at every budget up to 320 plans in "
            "benchmarks/samplers.py, so auto does not switch to it"
        )
    if name == "tpe":
        return f"sampler tpe: {start} start plans (baseline, each technique alone), then {tpe}"
    if name == "nsga2":
        return f"sampler nsga2: population {population}, first generation of {start} seeded plans"
    if name == "gp":
        return f"sampler gp: {start} start plans, then Optuna's Gaussian-process sampler (log EHVI)"
    return f"sampler random: {start} start plans (baseline, each technique alone), then random search"
