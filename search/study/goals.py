"""Goals relative to the baseline: a constraint given as a fraction or a factor of the
uncompressed model's figure, or accuracy as a drop in points, as NNCF, Intel Neural Compressor
and ModelOpt take them.

The forms (one syntax for every constraint flag, and one flag of its own for accuracy):

- ``--max-size-mb /10``: the baseline's size divided by 10; ``--max-latency-ms 50%``: half the
  baseline's latency (any ``max_`` flag, and a ``min_`` flag of a figure that is no fraction);
- ``--max-accuracy-drop 1``: at most 1 point below the baseline's accuracy (``min_accuracy``).

A study stores the form the user gave (``SearchConfig.goals``); once its baseline is measured
the absolute bound is resolved from the baseline's figure and stored beside it (the study's
``goals`` attribute), and from then on it is a constraint like any other: checked before
fine-tuning where the figure allows, given to the sampler, shown by ``front``, ``select`` and
the dashboard with the form it came from. Written by hand: Optuna's constraints are absolute.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tradeoff.search.errors import UsageError

GOALS_ATTR = (
    "tradeoff:goals"  # study attribute: {constraint: {"given": form, "bound": value, "baseline": value}}
)
DROP = "drop "  # the stored form of --max-accuracy-drop: "drop 1" (points)


def _figure(name: str):
    from tradeoff.search.trial.figures import by_constraint

    known = by_constraint()
    if name not in known:
        raise UsageError(f"unknown constraint {name!r}; choose from {', '.join(known)}")
    return known[name]


def is_relative(text: str) -> bool:
    text = str(text).strip()
    return text.endswith("%") or text.startswith("/") or text.startswith(DROP)


def check_goal(name: str, form: str) -> str:
    """``form`` normalised; UsageError naming the flag when it is no relative form of ``name``."""
    figure = _figure(name)
    form = str(form).strip()
    if form.startswith(DROP):
        if figure.unit != "fraction":
            raise UsageError(f"{figure.flag}: a drop in points is for accuracy only")
        points = _number(form[len(DROP) :], "--max-accuracy-drop")
        if not 0 <= points < 100:
            raise UsageError(f"--max-accuracy-drop {points:g}: give 0 to 100 points")
        return f"{DROP}{points:g}"
    if figure.unit == "fraction":
        raise UsageError(
            f"{figure.flag} {form}: a fraction's bound is absolute ({figure.flag} 0.9); relative to the "
            "baseline, give --max-accuracy-drop POINTS"
        )
    if form.endswith("%"):
        percent = _number(form[:-1], figure.flag)
        if percent <= 0:
            raise UsageError(f"{figure.flag} {form}: a percentage of the baseline must be > 0")
        return f"{percent:g}%"
    if form.startswith("/"):
        factor = _number(form[1:], figure.flag)
        if factor <= 0:
            raise UsageError(f"{figure.flag} {form}: divide the baseline by a number > 0")
        return f"/{factor:g}"
    raise UsageError(
        f"{figure.flag} {form!r}: give a number, a percentage of the baseline (50%) or a factor (/10)"
    )


def _number(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{flag}: {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise UsageError(f"{flag}: {text.strip()!r} is not a finite number")
    return value


def resolve(name: str, form: str, baseline: Mapping[str, Any]) -> float:
    """The absolute bound (in the constraint's unit) ``form`` stands for against the baseline's
    figures (``baseline``: the study's baseline attribute, or a trial's user attributes)."""
    figure = _figure(name)
    base = float(baseline[figure.name]) / figure.constraint_scale
    if form.startswith(DROP):
        return base - float(form[len(DROP) :]) / 100
    if form.endswith("%"):
        return base * float(form[:-1]) / 100
    return base / float(form[1:])


def resolve_all(goals: Mapping[str, str], baseline: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{constraint: {"given", "bound", "baseline"}} for every goal, against the baseline."""
    out = {}
    for name, form in goals.items():
        figure = _figure(name)
        out[name] = {
            "given": form,
            "bound": resolve(name, form, baseline),
            "baseline": float(baseline[figure.name]),
        }
    return out


def given_text(name: str, form: str) -> str:
    """The flag as the user gave it: ``--max-size-mb /10``, ``--max-accuracy-drop 1``."""
    figure = _figure(name)
    if form.startswith(DROP):
        return f"--max-accuracy-drop {form[len(DROP) :]}"
    return f"{figure.flag} {form}"


def constraints_text(constraints: Mapping[str, float], goals: Mapping[str, str]) -> str:
    """Every constraint as given, a relative one with its resolved bound: ``--max-size-mb /10
    (0.11 MB), --min-accuracy 90.00%``; a relative one not resolved yet says so."""
    parts = []
    for name in sorted(set(constraints) | set(goals)):
        figure = _figure(name)
        if name in goals:
            bound = constraints.get(name)
            resolved = "the baseline is not measured yet" if bound is None else figure.bound_text(bound)
            parts.append(f"{given_text(name, goals[name])} ({resolved})")
        else:
            parts.append(f"{figure.flag} {figure.bound_text(constraints[name])}")
    return ", ".join(parts)
