"""A profile of the search space before any fine-tune, as NVIDIA ModelOpt profiles its space.

Size, parameters, MACs, memory and latency depend on a plan's shape, not on its weights, so the
untrained network shows them: the smallest plan of the space (every knob at its most
compressing value), a middle one (every knob at the middle of its range) and the largest (the
uncompressed model) are built from the task's model with fresh weights, deployed in the study's
runtime and measured, and so is a random sample of the space's plans, to say what fraction of
them meets each constraint on those figures.

A constraint on an exactly counted figure (size, parameters, MACs, memory) that even the
smallest plan breaks cannot be met by any plan of the space: a new study is refused with one
line before anything is stored or trained, naming the smallest plan's figure and the knobs
whose range stops short of their limits. A relative goal (``--max-size-mb /10``) is resolved
against the largest plan here, which is the baseline's shape. Latency and measured energy are
timed, so their bounds are reported, never refused. Written by hand: no library profiles a
space of compression plans.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from tradeoff.search.trial.figures import EXACT, FIGURES, by_constraint
from tradeoff.spaces import ApplyContext, Plan, PlanError, apply_plan, ordered_knobs

SAMPLE = 12  # random plans `tradeoff profile` measures for the fractions
CALIBRATION = 32  # images the untrained plans' int8 forms are calibrated on (their latency, not accuracy)


def values_of(spec: Mapping[str, Any]) -> list[Any]:
    """The values a space entry holds, in ascending order (a range without a step: its ends
    and its middle)."""
    if "choices" in spec:
        return sorted(spec["choices"])
    low, high, step = float(spec["low"]), float(spec["high"]), spec.get("step")
    if high == low:
        return [low]
    if not step:
        return [low, round((low + high) / 2, 10), high]
    n = int(round((high - low) / float(step)))
    return [round(low + i * float(step), 10) for i in range(n + 1)]


def profile_plans(space: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(name, params) of the smallest, a middle and the largest plan of ``space``."""
    smallest, middle, largest = {}, {}, {}
    for knob in ordered_knobs():
        if knob.name not in space:
            continue
        values = values_of(space[knob.name])
        smallest[knob.name] = values[-1] if knob.compresses_upward else values[0]
        middle[knob.name] = values[len(values) // 2]
        largest[knob.name] = knob.off
    return [("smallest", smallest), ("middle", middle), ("largest", largest)]


def sample_plans(space: Mapping[str, Mapping[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` plans of ``space``, each knob's value drawn uniformly from its values."""
    rng = random.Random(seed)
    names = [k.name for k in ordered_knobs() if k.name in space]
    grids = {name: values_of(space[name]) for name in names}
    return [{name: rng.choice(grids[name]) for name in names} for _ in range(n)]


@dataclass
class Profiled:
    """One plan of the profile: its name, params, figures (empty when it cannot be built) and
    why it could not be."""

    name: str
    params: dict[str, Any]
    figures: dict[str, float]
    error: str = ""


def shape_figures(config) -> list[str]:
    """The figures the untrained network shows, in registry order."""
    return [f.name for f in FIGURES.values() if not f.needs_training]


class Profiler:
    """Builds and measures plans of ``config``'s space on ``task``'s model with fresh weights."""

    def __init__(self, config, task, log: Callable[[str], None] = lambda _m: None):
        from tradeoff.search.trial.runner import Runner

        self.config, self.task, self.log = config, task, log
        torch.manual_seed(config.seed)
        self.model = task.build().eval()
        self.runner = Runner(config, task, self.model)
        self.ctx = ApplyContext(
            example_input=task.example_input,
            num_classes=task.num_classes,
            calibration=(task.train.x[:CALIBRATION],),
            runtime=config.runtime,
        )

    def measure(self, name: str, params: Mapping[str, Any]) -> Profiled:
        try:
            plan = Plan.from_params(dict(params), options=self.config.knob_options)
            compressed = apply_plan(self.model, plan, self.ctx)
            figures = self.runner.measure(compressed, trained=False).to_dict()
        except (PlanError, ValueError, RuntimeError) as e:
            return Profiled(name, dict(params), {}, str(e).splitlines()[0] if str(e) else type(e).__name__)
        return Profiled(name, dict(params), {k: float(v) for k, v in figures.items() if k in FIGURES})


def profile(config, task, *, sample: int = 0, log: Callable[[str], None] = lambda _m: None) -> list[Profiled]:
    """The smallest, middle and largest plans of the study's space, then ``sample`` random ones."""
    profiler = Profiler(config, task, log)
    out = []
    progress = getattr(log, "progress", log)
    plans = profile_plans(config.space)
    plans += [(f"sample {i + 1}", p) for i, p in enumerate(sample_plans(config.space, sample, config.seed))]
    for i, (name, params) in enumerate(plans):
        progress(f"profile: {name} ({i + 1}/{len(plans)})")
        out.append(profiler.measure(name, params))
    return out


def bounds(config, profiled: list[Profiled]) -> dict[str, float]:
    """The study's constraints on figures the untrained network shows, relative goals resolved
    against the largest plan (the baseline's shape)."""
    from tradeoff.search.study.goals import resolve

    known = by_constraint()
    out = {n: b for n, b in config.constraints.items() if not known[n].needs_training}
    largest = next((p for p in profiled if p.name == "largest" and p.figures), None)
    for name, form in config.goals.items():
        if not known[name].needs_training and largest is not None:
            out[name] = resolve(name, form, largest.figures)
    return out


def unreachable(config, profiled: list[Profiled]) -> str | None:
    """One line when a constraint on an exactly counted figure is broken by the smallest plan
    of the space (no plan can meet it), else None."""
    from tradeoff.search.study.goals import given_text

    smallest = next((p for p in profiled if p.name == "smallest" and p.figures), None)
    if smallest is None:
        return None
    known = by_constraint()
    for name, bound in sorted(bounds(config, profiled).items()):
        figure = known[name]
        if figure.tolerance != EXACT or figure.name not in smallest.figures:
            continue
        if figure.constraint_value(smallest.figures[figure.name], bound) <= 0:
            continue
        given = given_text(name, config.goals[name]) if name in config.goals else f"{figure.flag} {bound:g}"
        if name in config.goals:
            given += f" ({figure.bound_text(bound)})"
        shown = figure.text(smallest.figures[figure.name])
        return (
            f"no plan of the search space can meet {given}: its smallest plan "
            f"({_plan_text(smallest.params)}) has {figure.short} {shown}; {_widen(config.space)}"
        )
    return None


def _widen(space: Mapping[str, Mapping[str, Any]]) -> str:
    """What would make smaller plans reachable: the knobs whose range stops short of its limit."""
    hints = []
    for knob in ordered_knobs():
        if knob.name not in space:
            continue
        values = values_of(space[knob.name])
        lo, hi = knob.limits
        edge, limit = (values[-1], hi) if knob.compresses_upward else (values[0], lo)
        if "choices" not in space[knob.name] and edge != limit:
            hints.append(f"{knob.name}={min(edge, limit):g}:{max(edge, limit):g}")
    if not hints:
        return "every knob already reaches its limit: loosen the bound"
    return "loosen the bound, or widen the space toward its limits (--space " + " --space ".join(hints) + ")"


def _plan_text(params: Mapping[str, Any]) -> str:
    from tradeoff.spaces import format_plan

    try:
        return format_plan(Plan.from_params(dict(params)))
    except (PlanError, TypeError, ValueError):
        return ", ".join(f"{k}={v}" for k, v in params.items())


def fractions(config, profiled: list[Profiled]) -> dict[str, tuple[int, int]]:
    """{constraint: (sampled plans meeting it, sampled plans measured)}."""
    known = by_constraint()
    sampled = [p for p in profiled if p.name.startswith("sample") and p.figures]
    out = {}
    for name, bound in sorted(bounds(config, profiled).items()):
        figure = known[name]
        ok = sum(figure.constraint_value(p.figures[figure.name], bound) <= 0 for p in sampled)
        out[name] = (ok, len(sampled))
    return out


def profile_text(config, profiled: list[Profiled]) -> str:
    """The profile as a table (the figures of the smallest, middle and largest plans) and, for a
    sample, the fraction meeting each constraint."""
    names = shape_figures(config)
    head = [p for p in profiled if not p.name.startswith("sample")]
    shown = [n for n in names if any(n in p.figures for p in head)]
    header = ["plan", *[FIGURES[n].short for n in shown], ""]
    rows = []
    for p in head:
        cells = [FIGURES[n].text(p.figures[n]) if n in p.figures else "-" for n in shown]
        rows.append([p.name, *cells, p.error or _plan_text(p.params)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["profile of the space (untrained networks; the figures that need no training):"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    known, limits = by_constraint(), bounds(config, profiled)
    for name, (ok, n) in fractions(config, profiled).items():
        if n:
            bound = known[name].bound_text(limits[name])
            lines.append(f"  {ok} of {n} sampled plans meet {known[name].flag} {bound}")
    return "\n".join(lines)


__all__ = ["Profiled", "profile", "profile_text", "unreachable", "values_of", "profile_plans"]
