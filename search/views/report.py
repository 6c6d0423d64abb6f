"""Text views of a study: the Pareto front against the baseline, and a one-line progress (the
HTML and PNG drawings are in ``search.views.plots``)."""

from __future__ import annotations

import optuna

from tradeoff.search.study.records import (
    CONFIG_ATTR,
    DUPLICATE_ATTR,
    FAIL_ATTR,
    ROLE_ATTR,
    SIBLING_OF_ATTR,
    SIBLING_ROLE,
    STOPPED_ATTR,
    baseline_of,
    broken_constraints,
    feasible,
    plan_words,
)
from tradeoff.search.trial.figures import FIGURES


def objectives_of(study: optuna.Study) -> tuple[str, ...]:
    """The figures the study trades off (a scalarized study still has them in its config)."""
    from tradeoff.search.study.config import LEGACY_OBJECTIVES, SearchConfig

    text = study.user_attrs.get(CONFIG_ATTR)
    return SearchConfig.from_json(text).objectives if text else LEGACY_OBJECTIVES


def front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The Pareto-optimal trials over the study's figures (only feasible ones where the study
    has constraints), by size; a plan the sampler proposed again (``duplicate_of``) is shown
    once, as its first trial."""
    from tradeoff.search.views.cost import measured

    objectives = objectives_of(study)
    return front_of(measured(study.get_trials(deepcopy=False), objectives), objectives)


def front_of(trials: list[optuna.trial.FrozenTrial], objectives) -> list[optuna.trial.FrozenTrial]:
    """The non-dominated ones of ``trials`` on ``objectives``."""
    from tradeoff.search.views.cost import pareto

    ok = [t for t in trials if feasible(t)]
    return sorted(pareto(ok, objectives), key=lambda t: (t.user_attrs.get("size_bytes", 0), t.number))


def noise_ties(trials: list[optuna.trial.FrozenTrial], objectives) -> dict[int, int]:
    """{trial number: the front trial it ties with}: a front trial whose only advantage over
    another front trial is an accuracy higher by less than the noise of the validation split
    (:func:`~tradeoff.search.trial.measure.accuracy.differ_beyond_noise`); the other is at least as
    good on every other objective. Such a plan is on the front by chance of a few images."""
    from tradeoff.search.trial.measure.accuracy import differ_beyond_noise

    if "accuracy" not in objectives:
        return {}
    others = [o for o in objectives if o != "accuracy"]
    ties = {}
    for t in trials:
        a, n = float(t.user_attrs["accuracy"]), int(t.user_attrs.get("accuracy_images") or 0)
        for u in trials:
            if u is t or not n:
                continue
            b = float(u.user_attrs["accuracy"])
            at_least_as_good = all(
                (float(u.user_attrs[o]) <= float(t.user_attrs[o]))
                if FIGURES[o].direction == "minimize"
                else (float(u.user_attrs[o]) >= float(t.user_attrs[o]))
                for o in others
            )
            if a > b and at_least_as_good and not differ_beyond_noise(a, b, n):
                ties[t.number] = u.number
                break
    return ties


def format_figure(name: str, value: float) -> str:
    """``value`` of figure ``name`` in its unit, as every view prints it."""
    return FIGURES[name].text(value) if name in FIGURES else f"{value:g}"


def versus(name: str, value: float, base: float | None) -> str:
    """``value`` of figure ``name`` against the baseline's ``base`` (e.g. "x8.3 faster")."""
    return FIGURES[name].versus(value, base) if name in FIGURES else ""


def format_front(study: optuna.Study) -> str:
    """The front as a table: each figure and, in brackets, its change against the baseline
    (accuracy in points, the rest as a ratio)."""
    from tradeoff.search.views.cost import measured

    base = baseline_of(study)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    infeasible = [t for t in complete if not feasible(t)]
    objectives = objectives_of(study)
    trials = front_of(measured(complete, objectives), objectives)  # from the one read above
    bounds = constraints_line(study)
    if not trials:
        if complete:
            return (
                f"study {study.study_name!r}: none of its {len(complete)} complete trials meets the "
                f"study's constraints yet ({_infeasible_summary(infeasible)})"
                + (f"\n{bounds}" if bounds else "")
            )
        return f"study {study.study_name!r} has no completed trial yet"
    shown = [n for n in FIGURES if any(n in t.user_attrs for t in trials)]  # a figure added later: "-"
    header = ["trial", *shown, "plan"]
    rows = []
    ties = noise_ties(trials, objectives)
    for t in trials:
        row = [
            f"#{t.number}"
            + (" (baseline)" if base and base.get("trial") == t.number else "")
            + (f" ~#{ties[t.number]}" if t.number in ties else "")
        ]
        for name in shown:
            v = t.user_attrs.get(name)
            if v is None:
                row.append("-")
            else:
                row.append(format_figure(name, v) + versus(name, v, base.get(name) if base else None))
        row.append(plan_words(t))
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.append(
        f"{len(trials)} Pareto-optimal of {len(complete)} complete trials in study {study.study_name!r}"
        + (f"; {_infeasible_summary(infeasible)}, not shown" if infeasible else "")
        + _pruned_summary(study)
        + ("" if base else " (no baseline measured yet)")
    )
    if bounds:
        lines.append(bounds)
    if ties:
        n = max(int(t.user_attrs.get("accuracy_images") or 0) for t in trials)
        lines.append(
            f"~#k: a tie with #k: its only advantage over #k is an accuracy higher by less than the 95 % "
            f"noise of {n} validation images"
        )
    return "\n".join(lines)


def constraints_line(study: optuna.Study) -> str | None:
    """``constraints: --max-size-mb /10 (0.126 MB), --min-accuracy 90.00%``: the study's
    constraints as given, a relative one with the bound it resolved to; None without any."""
    from tradeoff.search.study.config import SearchConfig
    from tradeoff.search.study.goals import constraints_text
    from tradeoff.search.study.study import with_goals

    text = study.user_attrs.get(CONFIG_ATTR)
    if not text:
        return None
    config = with_goals(SearchConfig.from_json(text), study.user_attrs)
    if not config.constraints and not config.goals:
        return None
    return "constraints: " + constraints_text(config.constraints, config.goals)


def _pruned_summary(study: optuna.Study) -> str:
    """``; 5 pruned before fine-tuning (a constraint), 3 fine-tunes stopped (could not reach the front)``."""
    pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    when = [
        (t.user_attrs.get(STOPPED_ATTR) or {}).get("when")
        for t in pruned
        if DUPLICATE_ATTR not in t.user_attrs
    ]
    before, during = when.count("before fine-tuning"), when.count("during fine-tuning")
    parts = [f"{before} pruned before fine-tuning (a constraint)"] if before else []
    fine_tunes = "fine-tune" if during == 1 else "fine-tunes"
    parts += [f"{during} {fine_tunes} stopped (could not reach the front)"] if during else []
    return "; " + ", ".join(parts) if parts else ""


def _infeasible_summary(infeasible: list[optuna.trial.FrozenTrial]) -> str:
    """``3 infeasible (#0, #4, #7: max_size_mb)``: which trials break which constraints."""
    if not infeasible:
        return "0 infeasible"
    numbers = ", ".join(f"#{t.number}" for t in infeasible[:8]) + (", ..." if len(infeasible) > 8 else "")
    names = sorted({n for t in infeasible for n in broken_constraints(t)})
    return f"{len(infeasible)} infeasible ({numbers}: {', '.join(names)})"


def progress_line(
    study: optuna.Study, trial: optuna.trial.FrozenTrial, *, done: int, total: int, elapsed_s: float
) -> str:
    state = trial.state.name.lower()
    duration = trial.duration.total_seconds() if trial.duration else 0.0
    head = f"[{done}/{total}] trial #{trial.number} {state} in {duration:.1f} s"
    if DUPLICATE_ATTR in trial.user_attrs:
        twin = trial.user_attrs[DUPLICATE_ATTR]
        head = f"[{done}/{total}] trial #{trial.number} repeats #{twin}'s plan (answered, not counted)"
    elif trial.user_attrs.get(ROLE_ATTR) == SIBLING_ROLE:
        head += f" (a variant of #{trial.user_attrs.get(SIBLING_OF_ATTR)} at another bit-width, not counted)"
    if trial.state != optuna.trial.TrialState.COMPLETE:
        stopped = trial.user_attrs.get(STOPPED_ATTR)
        reason = (
            stopped.get("reason", "") if isinstance(stopped, dict) else trial.user_attrs.get(FAIL_ATTR, "")
        )
        return f"{head}: {reason}" if reason else head
    base = baseline_of(study) or {}
    figs = " ".join(
        f"{FIGURES[n].short}={format_figure(n, trial.user_attrs[n])}"
        f"{versus(n, trial.user_attrs[n], base.get(n))}"
        for n in objectives_of(study)
        if n in trial.user_attrs
    )
    m, s = divmod(int(elapsed_s), 60)
    broken = broken_constraints(trial)
    if broken:
        figs += f" | infeasible: {', '.join(broken)}"
    return f"{head} | {figs} | front: {len(front(study))}{_best_so_far(study, base)} | elapsed {m}:{s:02d}"


def _best_so_far(study: optuna.Study, base: dict) -> str:
    """The smallest complete plan within 1 point of the baseline's accuracy, as the current best."""
    if not base:
        return ""
    good = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.user_attrs.get("accuracy", 0) >= base["accuracy"] - 0.01
        and "size_bytes" in t.user_attrs
        and feasible(t)
    ]
    if not good:
        return ""
    best = min(good, key=lambda t: (t.user_attrs["size_bytes"], t.user_attrs["latency_ms"]))
    smaller = base["size_bytes"] / best.user_attrs["size_bytes"]
    faster = base["latency_ms"] / best.user_attrs["latency_ms"]
    return f" | best within 1 pt: #{best.number} {smaller:.1f}x smaller, {faster:.1f}x faster"


# -- the HTML report ------------------------------------------------------------------------
