"""Granularity: how a trial's searched numbers become a plan's per-layer values.

- ``global``: one value per knob for the whole network (the searched numbers are the plan).
- ``allocated``: per per-layer knob (``Knob.allocatable``) the sampler searches a budget in the
  knob's own units (``Knob.budget_choices``; the parameter-weighted mean over the knob's layer
  groups: the mean pruning ratio, the mean rank ratio, the average weight bits) and one
  ``allocation`` sharpness in [0, 1]; the study's sensitivity table (``spaces.sensitivity``)
  turns them into per-layer values with :func:`allocate`.
- ``layer``: one searched value per layer group and technique (``knob[group]`` params), for
  large budgets.

The allocation rule. Choosing per-layer values under a budget so that the summed per-layer
damage is least is the problem HAWQ-V2/V3 solve over Hessian sensitivities (an integer program),
HAQ under a latency or size budget, AIMET's greedy ratio selection from a measured table, and
ModelOpt's AutoQuantize under an effective-bits budget; like classic bit allocation (Shoham and
Gersho, 1988) it is solved here by Lagrangian relaxation: each layer group ``l`` takes the value
``v`` of its grid that minimises

    s * d_l(v) / D  +  (1 - s) * w_l / W * ((v - b) / span)^2  +  lambda * w_l / W * v / span

(``d_l``: the table's measured effect of ``v`` on ``l`` alone, interpolated; ``D``: the summed
effects of the uniform plan at budget ``b``; ``w_l``: the layer's weights, ``W`` their sum;
``lambda``, the price of the budget, found by bisection as the smallest that meets it; the sign
flips for pruning, where the budget is a floor; what the grid leaves of the budget is then given
back a step at a time to the layers that gain most from it, or, where the objective cannot tell
them apart, that the table says it spares most). Sharpness ``s = 0`` gives the uniform plan at
the budget (today's ``global`` plan; a budget between two grid values, 3 bits between 4 and 2,
keeps the sensitive layers at the upper one); ``s = 1`` the allocation the table alone prefers (less
sensitive layers compressed more); between them, how far the table is trusted, searched like any
other number. The separable, additive view of damage is the assumption all the works above make;
the table measures, per study, whether the distillation loss or the accuracy drop follows it
better, and that one is ``d``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optuna

from tradeoff.spaces._base import KNOBS, Knob, SpaceError, allocatable_knobs, ordered_knobs
from tradeoff.spaces.plan import Plan
from tradeoff.spaces.sensitivity import SensitivityTable

GRANULARITIES = ("global", "allocated", "layer")
DEFAULT_GRANULARITY = "allocated"
SHARPNESS = "allocation"  # the sharpness param of an allocated plan
SHARPNESS_STEP = 0.1
GRID_STEP = 0.05  # a continuous knob's per-layer grid when its space has no step


def grid(knob: str, spec: Mapping[str, Any]) -> list[float]:
    """The values a layer group may take (``Knob.layer_grid``): the space's choices, or its
    range on its step; the off value is one (a layer may be left alone), but for bits."""
    return KNOBS[knob].layer_grid(spec, GRID_STEP)


def check_granularity(granularity: str, space: Mapping[str, Any]) -> None:
    """SpaceError when a knob ``space`` can switch on says it takes per-layer values but cannot
    list its layer groups: at ``allocated`` or ``layer`` granularity it would silently stay
    uniform. (A knob without ``per_layer`` is one number at any.)"""
    if granularity == "global":
        return
    for knob in ordered_knobs():
        if (
            knob.name in space
            and knob.per_layer
            and not knob.allocatable()
            and knob.can_switch_on(space[knob.name])
        ):
            raise SpaceError(
                f"knob `{knob.name}` takes per-layer values but does not list its layer groups "
                f"(Knob.layer_groups and Knob.probe_), so --granularity {granularity} cannot set it "
                "layer by layer: use --granularity global, or implement them"
            )


def budget_space(space: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``space`` as an allocated study searches it: each knob's budgets where they differ from
    its values (``Knob.budget_choices``: 8, 6, 4, 3, 2 average bits, not only the widths)."""
    out = {name: dict(spec) for name, spec in space.items()}
    for knob in allocatable_knobs():
        if knob.name in out:
            budgets = knob.budget_choices(out[knob.name])
            if budgets is not None:
                out[knob.name] = {**out[knob.name], "choices": budgets}
    return out


def allocate(
    table: SensitivityTable, knob: str, budget: float, sharpness: float, values: list[float]
) -> dict[str, float]:
    """Per-layer values of ``knob`` under ``budget`` (see the module docstring), one per row of
    the table; ``*`` (the layers the table lacks) gets the off value, or for bits the budget."""
    k = KNOBS[knob]
    rows = table.rows.get(knob, [])
    rest = k.unmeasured_value(budget, values)
    if not rows or float(budget) == float(k.off):
        return {"*": float(k.off)} if float(budget) == float(k.off) else {"*": rest}
    floor = k.compresses_upward  # more is more compression: the budget is a floor
    weights = [max(1, int(r["params"])) for r in rows]
    total = float(sum(weights))
    span = max(values) - min(values) or 1.0
    effects = [[table.effect(knob, r["group"], v) for v in values] for r in rows]
    at_budget = sum(table.effect(knob, r["group"], budget) for r in rows)
    scale = at_budget if at_budget > 0 else max((max(e) for e in effects), default=1.0) or 1.0
    s = min(max(float(sharpness), 0.0), 1.0)
    sign = -1.0 if floor else 1.0

    def objective(layer: int, i: int) -> float:
        share = weights[layer] / total
        return s * effects[layer][i] / scale + (1 - s) * share * ((values[i] - budget) / span) ** 2

    def choose(lam: float) -> list[int]:
        picks = []
        for layer, w in enumerate(weights):
            share = w / total
            costs = [objective(layer, i) + lam * sign * share * v / span for i, v in enumerate(values)]
            picks.append(min(range(len(values)), key=lambda i: (costs[i], -values[i] * sign)))
        return picks

    def meets(picks: list[int]) -> bool:
        mean = sum(w * values[i] for w, i in zip(weights, picks)) / total
        return mean >= budget - 1e-9 if floor else mean <= budget + 1e-9

    picks = choose(0.0)
    if not meets(picks):
        lo, hi = 0.0, 1e-6
        while not meets(choose(hi)) and hi < 1e9:
            lo, hi = hi, hi * 4
        for _ in range(60):
            mid = math.sqrt(lo * hi) if lo > 0 else hi / 2
            if meets(choose(mid)):
                hi = mid
            else:
                lo = mid
            if hi - lo <= 1e-9 * hi:
                break
        picks = choose(hi)
        picks = _fill(picks, weights, values, budget, floor, objective, lambda layer, i: effects[layer][i])
    out = {r["group"]: _number(k, values[i]) for r, i in zip(rows, picks)}
    out["*"] = rest
    return out


def _fill(picks, weights, values, budget, floor, objective, damage) -> list[int]:
    """The Lagrangian's choice on a grid can leave part of the budget unused (its price jumps
    between grid points): give it back, one grid step at a time, to the layer whose objective
    falls most per unit of budget, while the budget still holds. Where the objective cannot tell
    layers apart (sharpness 0 and a budget between two grid values: 2 and 4 bits are as far from
    3), the measured ``damage`` decides: the step goes to the layer it spares most."""
    picks = list(picks)
    total = float(sum(weights))
    direction = -1 if floor else 1  # a step towards less compression: a lower ratio, more bits or rank
    used = sum(w * values[i] for w, i in zip(weights, picks)) / total
    while True:
        best, best_gain = None, (0.0, 0.0)
        for layer, i in enumerate(picks):
            j = i + direction
            if not 0 <= j < len(values):
                continue
            cost = weights[layer] * (values[j] - values[i]) / total
            after = used + cost
            if (after < budget - 1e-9) if floor else (after > budget + 1e-9):
                continue
            if not cost:
                continue
            # rounded: equal distances to the budget (0.45 and 0.35 from 0.4) are a tie, not noise
            gain = (
                round((objective(layer, i) - objective(layer, j)) / abs(cost), 9),
                (damage(layer, i) - damage(layer, j)) / abs(cost),
            )
            if gain > best_gain:
                best, best_gain = layer, gain
        if best is None:
            return picks
        used += weights[best] * (values[picks[best] + direction] - values[picks[best]]) / total
        picks[best] += direction


def _number(knob: Knob, v: float):
    return int(v) if isinstance(knob.off, int) else round(float(v), 10)


# -- the search space at each granularity ---------------------------------------------------


def _layer_groups(table: SensitivityTable | None, knob: str) -> list[str]:
    return [r["group"] for r in (table.rows.get(knob, []) if table else [])]


def suggest_values(
    trial: optuna.Trial,
    space: Mapping[str, Mapping[str, Any]],
    granularity: str,
    table: SensitivityTable | None,
) -> None:
    """Ask ``trial`` for the numbers a plan at ``granularity`` is made from (its params);
    :func:`plan_from_params` turns them into the plan. At ``layer``, a plan queued with one value
    per knob (the baseline, the start design) gives that value to every group of the knob."""
    fixed = getattr(trial, "_fixed_params", None)
    if granularity == "layer" and isinstance(fixed, dict):
        for knob in allocatable_knobs():
            if knob.name in fixed:
                for g in _layer_groups(table, knob.name):
                    fixed.setdefault(f"{knob.name}[{g}]", fixed[knob.name])
    for knob in ordered_knobs():
        if knob.name not in space:
            continue
        spec = space[knob.name]
        groups = _layer_groups(table, knob.name) if knob.allocatable() else []
        budgets = knob.budget_choices(spec) if knob.allocatable() else None
        if granularity == "layer" and groups:
            for g in groups:
                name = f"{knob.name}[{g}]"
                if "choices" in spec:
                    trial.suggest_categorical(name, spec["choices"])
                else:
                    trial.suggest_float(name, spec["low"], spec["high"], step=spec.get("step"))
        elif granularity == "allocated" and budgets is not None:
            # the budgets whether or not the table could measure a layer: without rows a budget
            # is a uniform value (6 and 3 bits are real widths), as the start design expects
            trial.suggest_categorical(knob.name, budgets)
        else:
            knob.suggest(trial, spec)
    if granularity == "allocated" and table is not None:
        trial.suggest_float(SHARPNESS, 0.0, 1.0, step=SHARPNESS_STEP)


def plan_from_params(
    params: Mapping[str, Any],
    *,
    granularity: str,
    table: SensitivityTable | None,
    space: Mapping[str, Mapping[str, Any]],
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Plan:
    """The plan a trial's params stand for: as they are (``global``, ``layer``), or allocated
    per layer from the budgets and the sharpness (``allocated``)."""
    params = dict(params)
    if granularity != "allocated" or SHARPNESS not in params or table is None:
        params.pop(SHARPNESS, None)
        return Plan.from_params(params, options=options)
    sharpness = float(params.pop(SHARPNESS))
    values: dict[str, Any] = {}
    for name, value in params.items():
        # a technique the table could not measure (torch-pruning cannot trace the whole graph, say)
        # stays uniform at its budget, as a global plan would be
        knob = KNOBS.get(name)
        if knob and knob.allocatable() and name in space and not knob.is_off(value) and table.rows.get(name):
            values[name] = allocate(table, name, float(value), sharpness, grid(name, space[name]))
        else:
            values[name] = value
    return Plan.from_params(values, options=options)


def summary(knob: str, value: Any) -> str:
    """One line for a per-layer value: bit-widths as counts (``8x3 4x14 32x2``), ratios as their
    range over the groups (``0.1-0.6 over 12 groups``)."""
    if not isinstance(value, Mapping):
        return f"{value:g}" if isinstance(value, (int, float)) else str(value)
    numbers = [v for g, v in value.items() if g != "*"] or list(value.values())
    if knob in KNOBS and isinstance(KNOBS[knob].off, int):
        counts: dict[int, int] = {}
        for v in numbers:
            counts[int(v)] = counts.get(int(v), 0) + 1
        return " ".join(f"{b}x{n}" for b, n in sorted(counts.items(), key=lambda kv: -kv[0]))
    lo, hi = min(numbers), max(numbers)
    text = f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"
    return f"{text} over {len(numbers)} groups"


__all__ = [
    "DEFAULT_GRANULARITY",
    "GRANULARITIES",
    "SHARPNESS",
    "allocate",
    "budget_space",
    "check_granularity",
    "grid",
    "plan_from_params",
    "suggest_values",
    "summary",
]
