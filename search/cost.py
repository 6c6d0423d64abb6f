"""The weighted cost function and the choice of one trial from the front.

    L = alpha * accuracy + beta * size + gamma * latency + delta * energy   (lower is better)

Each term is normalised against the baseline, so the weights are comparable: accuracy is the
drop in percentage points (negative when the plan is more accurate), the others are ratios to
the baseline (1.0 = as big / slow / hungry as the uncompressed model). ``params`` and ``flops``
can be weighted the same way.

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

from search.errors import UsageError
from search.measure import OBJECTIVES
from search.records import DUPLICATE_ATTR, broken_constraints, plan_of
from search.records import feasible as is_feasible

# weight name -> figure it weighs
WEIGHTS: dict[str, str] = {
    "accuracy": "accuracy",
    "size": "size_bytes",
    "latency": "latency_ms",
    "energy": "energy_mj",
    "params": "params",
    "flops": "flops",
}
DEFAULT_WEIGHTS = {"accuracy": 0.6, "size": 0.2, "latency": 0.1, "energy": 0.1}

# constraint -> (figure, kind, scale of the given number to the figure's unit): the study's
# constraints (stored with it, given to Optuna) and select's/export's take the same names
CONSTRAINTS: dict[str, tuple[str, str, float]] = {
    "max_latency_ms": ("latency_ms", "max", 1.0),
    "max_size_mb": ("size_bytes", "max", 1e6),  # MB = 10^6 bytes
    "max_energy_mj": ("energy_mj", "max", 1.0),
    "max_params": ("params", "max", 1.0),
    "max_flops": ("flops", "max", 1.0),
    "min_accuracy": ("accuracy", "min", 1.0),
}
# the ones with a command-line flag on search, create, select and export
FLAG_CONSTRAINTS = ("max_latency_ms", "max_size_mb", "max_energy_mj", "min_accuracy")


def check_constraints(constraints: Mapping[str, float | None]) -> dict[str, float]:
    """The given constraints (None values dropped) as floats; UsageError names an unknown or
    impossible one."""
    out = {}
    for name, value in constraints.items():
        if name not in CONSTRAINTS:
            raise UsageError(f"unknown constraint {name!r}; choose from {', '.join(CONSTRAINTS)}")
        if value is None:
            continue
        value = float(value)
        flag = "--" + name.replace("_", "-")
        if not math.isfinite(value) or value <= 0:
            raise UsageError(f"impossible constraint {flag} {value:g}: it must be a finite number > 0")
        if name == "min_accuracy" and value > 1:
            raise UsageError(f"impossible constraint {flag} {value:g}: accuracy is a fraction in (0, 1]")
        out[name] = value
    return out


def constraint_values(figures: Mapping[str, float], constraints: Mapping[str, float]) -> dict[str, float]:
    """One value per constraint, <= 0 where the figures meet it (Optuna's convention), in the
    figure's unit."""
    out = {}
    for name, bound in sorted(constraints.items()):
        figure, kind, scale = CONSTRAINTS[name]
        limit, value = bound * scale, float(figures[figure])
        out[name] = value - limit if kind == "max" else limit - value
    return out


def merge_constraints(study: Mapping[str, float], given: Mapping[str, float]) -> dict[str, float]:
    """The study's stored constraints tightened by the ones given now: a choice never leaves
    the study's constraints."""
    out = dict(study)
    for name, value in given.items():
        kind = CONSTRAINTS[name][1]
        if name not in out:
            out[name] = value
        else:
            out[name] = min(out[name], value) if kind == "max" else max(out[name], value)
    return out


def _check_name(name: str) -> None:
    if name not in WEIGHTS:
        raise UsageError(f"--weights: unknown weight {name!r}; choose from {', '.join(WEIGHTS)}")


def _check_value(name: str, weight: float, shown: object) -> None:
    if not math.isfinite(weight) or weight < 0:
        raise UsageError(f"--weights: {name}={shown} must be a finite number >= 0")


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
    for name in weights:
        figure = WEIGHTS[name]
        value, base = float(figures[figure]), float(baseline[figure])
        if figure == "accuracy":
            out[name] = 100.0 * (base - value)  # points of drop
        else:
            out[name] = value / base if base else math.inf
    return out


def cost(figures: Mapping[str, float], baseline: Mapping[str, float], weights: Mapping[str, float]) -> float:
    t = terms(figures, baseline, weights)
    return float(sum(weights[n] * t[n] for n in weights))


def violations(figures: Mapping[str, float], constraints: Mapping[str, float]) -> dict[str, float]:
    """{constraint: how far the figures miss it, relative to the bound} for the missed ones."""
    out = {}
    for name, miss in constraint_values(figures, constraints).items():
        if miss > 0:
            out[name] = miss / (constraints[name] * CONSTRAINTS[name][2])
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
    directions = [OBJECTIVES[o] for o in objectives]
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
    needed = sorted(set(objectives) | {WEIGHTS[n] for n in weights})
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
    figure, kind, scale = CONSTRAINTS[name]
    value = float(figures[figure]) / scale
    unit = {"max_latency_ms": " ms", "max_size_mb": " MB", "max_energy_mj": " mJ"}.get(name, "")
    if name == "min_accuracy":
        return f"accuracy {value:.2%} < {bound:.2%}"
    return f"{figure.split('_')[0]} {value:.4g}{unit} > {bound:g}{unit}"


def format_ranking(ranked: Sequence[Ranked], weights: Mapping[str, float], *, limit: int = 10) -> str:
    """The ranking with each weighted term, so the user sees why the winner won."""
    names = list(weights)
    header = [
        "rank",
        "trial",
        "cost",
        *[f"{n} ({'pts drop' if n == 'accuracy' else 'x base'})" for n in names],
        "plan",
    ]
    rows = []
    for i, r in enumerate(ranked[:limit], 1):
        plan = plan_of(r.trial)
        rows.append(
            [
                str(i),
                f"#{r.trial.number}",
                f"{r.cost:.4f}",
                *[f"{weights[n]:g} x {r.terms[n]:.4g} = {weights[n] * r.terms[n]:.4f}" for n in names],
                ", ".join(f"{k}={v:g}" for k, v in plan.items() if k != "version"),
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
