"""The weighted cost function and the choice of one trial from the front.

    L = alpha * accuracy + beta * size + gamma * latency + delta * energy   (lower is better)

Each term is normalised against the baseline, so the weights are comparable: accuracy is the
drop in percentage points (negative when the plan is more accurate), the others are ratios to
the baseline (1.0 = as big / slow / hungry as the uncompressed model). Every registered figure
can be weighted, by its alias (``tradeoff.search.trial.figures``: size, latency, energy, params,
flops, memory, ...).

:func:`rank` is the whole of ``tradeoff select``: keep the complete trials that meet the
constraints, keep the Pareto-optimal ones among those (over the study's objectives), sort by
cost. The Pareto filter is written here rather than taken from Optuna because it must run on
the feasible subset under the user's constraints, which Optuna's ``best_trials`` cannot.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import optuna

from tradeoff.search.errors import UsageError
from tradeoff.search.study.records import (
    DUPLICATE_ATTR,
    FAIL_ATTR,
    baseline_of,
    broken_constraints,
    plan_words,
)
from tradeoff.search.study.records import feasible as is_feasible
from tradeoff.search.trial.figures import FIGURES, by_constraint, by_weight

DEFAULT_WEIGHTS = {"accuracy": 0.6, "size": 0.2, "latency": 0.1, "energy": 0.1}


def check_constraints(constraints: Mapping[str, float | None]) -> dict[str, float]:
    """The given constraints (None values dropped) as floats; UsageError names an unknown or
    impossible one. Names and units are the figures' (``max_size_mb``: MB)."""
    known = by_constraint()
    out = {}
    for name, value in constraints.items():
        if name not in known:
            raise UsageError(f"unknown constraint {name!r}; choose from {', '.join(known)}")
        if value is None:
            continue
        value = float(value)
        flag = known[name].flag
        if not math.isfinite(value) or value <= 0:
            raise UsageError(f"impossible constraint {flag} {value:g}: it must be a finite number > 0")
        if known[name].unit == "fraction" and value > 1:
            raise UsageError(
                f"impossible constraint {flag} {value:g}: {known[name].short} is a fraction in (0, 1]"
            )
        out[name] = value
    return out


def constraint_values(figures: Mapping[str, float], constraints: Mapping[str, float]) -> dict[str, float]:
    """One value per constraint, <= 0 where the figures meet it (Optuna's convention), in the
    figure's unit."""
    known = by_constraint()
    out = {}
    for name, bound in sorted(constraints.items()):
        figure = known[name]
        out[name] = figure.constraint_value(figures[figure.name], bound)
    return out


def merge_constraints(study: Mapping[str, float], given: Mapping[str, float]) -> dict[str, float]:
    """The study's stored constraints tightened by the ones given now: a choice never leaves
    the study's constraints."""
    known = by_constraint()
    out = dict(study)
    for name, value in given.items():
        if name not in out:
            out[name] = value
        elif known[name].direction == "minimize":
            out[name] = min(out[name], value)
        else:
            out[name] = max(out[name], value)
    return out


def _check_name(name: str) -> None:
    if name not in by_weight():
        raise UsageError(f"--weights: unknown weight {name!r}; choose from {', '.join(by_weight())}")


MAX_WEIGHT = 1e6  # weights are relative; past this a cost overflows, below MIN_WEIGHT it underflows
MIN_WEIGHT = 1e-6


def _check_value(name: str, weight: float, shown: object) -> None:
    if not math.isfinite(weight) or weight < 0:
        raise UsageError(f"--weights: {name}={shown} must be a finite number >= 0")
    if weight > MAX_WEIGHT or 0 < weight < MIN_WEIGHT:
        raise UsageError(
            f"--weights: {name}={shown} is out of range: a weight is 0 or from {MIN_WEIGHT:g} to "
            f"{MAX_WEIGHT:g} (only their ratios matter)"
        )


def _check_not_all_zero(weights: Mapping[str, float]) -> dict[str, float]:
    if not any(weights.values()):
        raise UsageError("--weights: every weight is 0; give at least one a positive weight")
    return dict(weights)


def parse_weights(text: str | None) -> dict[str, float]:
    """``accuracy=0.6,size=0.2,...`` -> {name: weight}; UsageError names the bad part."""
    if text is None or not text.strip():
        return dict(DEFAULT_WEIGHTS)
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        name = name.strip()
        if not sep:
            raise UsageError(f"--weights: {part.strip()!r} is not NAME=NUMBER (e.g. accuracy=0.6,size=0.4)")
        _check_name(name)
        if name in weights:
            raise UsageError(f"--weights: {name!r} is given twice")
        try:
            weights[name] = float(value)
        except ValueError:
            raise UsageError(f"--weights: {name}={value!r} is not a number") from None
        _check_value(name, weights[name], value)
    return _check_not_all_zero(weights)


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """The same checks as :func:`parse_weights`, for weights that arrive as a mapping (a stored
    configuration)."""
    for name, weight in weights.items():
        _check_name(name)
        _check_value(name, float(weight), weight)
    return _check_not_all_zero({name: float(w) for name, w in weights.items()})


def terms(figures: Mapping[str, float], baseline: Mapping[str, float], weights: Mapping[str, float]):
    """{weight name: normalised term} for the weighted names."""
    out = {}
    weighed = by_weight()
    for name in weights:
        figure = weighed[name]
        value, base = float(figures[figure.name]), float(baseline[figure.name])
        if figure.unit == "fraction":  # accuracy: points of drop (a fall in a maximised figure)
            out[name] = 100.0 * (base - value) if figure.direction == "maximize" else 100.0 * (value - base)
        else:
            out[name] = value / base if base else math.inf
    return out


def cost(figures: Mapping[str, float], baseline: Mapping[str, float], weights: Mapping[str, float]) -> float:
    t = terms(figures, baseline, weights)
    return float(sum(weights[n] * t[n] for n in weights))


def violations(figures: Mapping[str, float], constraints: Mapping[str, float]) -> dict[str, float]:
    """{constraint: how far the figures miss it, relative to the bound} for the missed ones."""
    known = by_constraint()
    out = {}
    for name, miss in constraint_values(figures, constraints).items():
        if miss > 0:
            out[name] = miss / (constraints[name] * known[name].constraint_scale)
    return out


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    better = False
    for x, y, d in zip(a, b, directions):
        if d == "maximize":
            x, y = -x, -y
        if x > y:
            return False
        better |= x < y
    return better


def pareto(trials: Sequence[optuna.trial.FrozenTrial], objectives: Sequence[str]):
    """The trials no other trial dominates on the figures ``objectives`` (read from user attrs)."""
    directions = [FIGURES[o].direction for o in objectives]
    vecs = [[float(t.user_attrs[o]) for o in objectives] for t in trials]
    return [t for t, v in zip(trials, vecs) if not any(dominates(w, v, directions) for w in vecs)]


def measured(trials: Iterable[optuna.trial.FrozenTrial], objectives: Sequence[str]):
    """Complete trials with every figure, a re-proposed plan (``duplicate_of``) once."""
    return [
        t
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE
        and DUPLICATE_ATTR not in t.user_attrs
        and all(o in t.user_attrs for o in objectives)
    ]


@dataclass(frozen=True)
class Ranked:
    trial: optuna.trial.FrozenTrial
    cost: float
    terms: dict[str, float]


class NoFeasibleTrial(UsageError):
    """No trial meets the constraints; ``nearest`` holds the closest ones with what they miss."""

    def __init__(self, message: str, nearest: list[tuple[optuna.trial.FrozenTrial, dict[str, float]]]):
        super().__init__(message)
        self.nearest = nearest


def rank(
    trials: Iterable[optuna.trial.FrozenTrial],
    baseline: Mapping[str, float],
    weights: Mapping[str, float],
    *,
    objectives: Sequence[str],
    constraints: Mapping[str, float] | None = None,
) -> list[Ranked]:
    """The feasible Pareto-optimal trials, cheapest first (ties: lower trial number).

    Feasible: meets ``constraints`` (pass the study's own merged with the user's, see
    :func:`merge_constraints`) and every constraint stored on the trial itself."""
    constraints = check_constraints(constraints or {})
    needed = sorted(set(objectives) | {by_weight()[n].name for n in weights})
    pool = measured(trials, needed)
    if not pool:
        raise UsageError("the study has no complete trial yet; run `tradeoff search` first")
    feasible = [t for t in pool if not violations(t.user_attrs, constraints) and is_feasible(t)]
    if not feasible:

        def miss(t):
            return sum(violations(t.user_attrs, constraints).values())

        nearest = sorted(pool, key=lambda t: (miss(t), t.number))[:3]

        def described(t) -> str:
            misses = [
                _describe_miss(n, t.user_attrs, constraints[n]) for n in violations(t.user_attrs, constraints)
            ]
            # a constraint stored on the trial that was not given here (a study from elsewhere)
            misses += [f"the study's constraint {n!r}" for n in broken_constraints(t) if n not in constraints]
            return f"#{t.number} misses " + ", ".join(misses)

        shown = "; ".join(described(t) for t in nearest)
        raise NoFeasibleTrial(
            f"no trial meets the constraints; nearest: {shown}",
            [(t, violations(t.user_attrs, constraints)) for t in nearest],
        )
    ranked = [
        Ranked(t, cost(t.user_attrs, baseline, weights), terms(t.user_attrs, baseline, weights))
        for t in pareto(feasible, objectives)
    ]
    return sorted(ranked, key=lambda r: (r.cost, r.trial.number))


def _describe_miss(name: str, figures: Mapping[str, float], bound: float) -> str:
    figure = by_constraint()[name]
    return figure.describe_miss(float(figures[figure.name]), bound)


def format_ranking(ranked: Sequence[Ranked], weights: Mapping[str, float], *, limit: int = 10) -> str:
    """The ranking with each weighted term, so the user sees why the winner won."""
    names = list(weights)
    header = [
        "rank",
        "trial",
        "cost",
        *[f"{n} ({'pts drop' if by_weight()[n].unit == 'fraction' else 'x base'})" for n in names],
        "plan",
    ]
    rows = []
    for i, r in enumerate(ranked[:limit], 1):
        rows.append(
            [
                str(i),
                f"#{r.trial.number}",
                f"{r.cost:.4f}",
                *[f"{weights[n]:g} x {r.terms[n]:.4g} = {weights[n] * r.terms[n]:.4f}" for n in names],
                plan_words(r.trial),
            ]
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    more = len(ranked) - limit
    weights_text = ", ".join(f"{n}={weights[n]:g}" for n in names)
    lines.append(
        f"{len(ranked)} feasible Pareto-optimal trials ranked by cost = sum of weight x term "
        f"(weights {weights_text}; lower is better)" + (f"; {more} more not shown" if more > 0 else "")
    )
    return "\n".join(lines)


def ranking(study: optuna.Study, config, *, weights: str | None, constraints: Mapping[str, float]):
    """(the feasible Pareto-optimal trials of ``study`` cheapest first, the weights used): the
    study's own constraints always hold, the ones given can only tighten them."""
    parsed = parse_weights(weights)
    merged = merge_constraints(config.constraints, check_constraints(constraints))
    baseline = baseline_of(study)
    if baseline is None:
        raise UsageError(f"study {study.study_name!r} has no measured baseline yet; run `tradeoff search`")
    ranked = rank(
        study.get_trials(deepcopy=False), baseline, parsed, objectives=config.objectives, constraints=merged
    )
    return ranked, parsed


def choose(
    study: optuna.Study,
    config,
    *,
    trial: int | None,
    weights: str | None,
    constraints: Mapping[str, float],
    log=print,
) -> optuna.trial.FrozenTrial:
    """The trial to ship: number ``trial`` (a re-proposed plan resolves to its first trial; one
    that breaks the study's constraints is chosen with a warning), else the top of
    :func:`ranking`. UsageError names a trial that does not exist or did not complete."""
    given = {k: v for k, v in constraints.items() if v is not None}
    if trial is None:
        ranked, _ = ranking(study, config, weights=weights, constraints=given)
        log(f"selected trial #{ranked[0].trial.number} (cost {ranked[0].cost:.4f})")
        return ranked[0].trial
    if weights or given:
        raise UsageError("give either --trial or --weights/constraints, not both")
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    if trial not in by_number:
        last = max(by_number) if by_number else None
        raise UsageError(
            f"--trial {trial}: no such trial in study {study.study_name!r}"
            + (f" (numbers run 0-{last})" if last is not None else " (it has no trials)")
        )
    chosen = by_number[trial]
    if chosen.state != optuna.trial.TrialState.COMPLETE:
        reason = chosen.user_attrs.get(FAIL_ATTR)
        raise UsageError(
            f"--trial {trial} did not complete ({chosen.state.name.lower()}"
            + (f": {reason}" if reason else "")
            + "); pick a complete trial, e.g. from `tradeoff select`"
        )
    if DUPLICATE_ATTR in chosen.user_attrs:
        chosen = by_number[chosen.user_attrs[DUPLICATE_ATTR]]
    broken = broken_constraints(chosen)
    if broken:
        log(
            f"warning: trial #{chosen.number} breaks the study's constraints ({', '.join(broken)}); "
            "exporting it because --trial asked for it"
        )
    return chosen
