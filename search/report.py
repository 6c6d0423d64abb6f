"""Text views of a study: the Pareto front against the baseline, and a one-line progress."""

from __future__ import annotations

import optuna

from search.runner import BASELINE_ATTR, FAIL_ATTR

FIGURES = ("accuracy", "size_bytes", "latency_ms", "energy_mj", "flops", "params")


def baseline_of(study: optuna.Study) -> dict | None:
    return study.user_attrs.get(BASELINE_ATTR)


def front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The Pareto-optimal trials (only feasible ones where the study has constraints), by size;
    a plan the sampler proposed again (``duplicate_of``) is shown once, as its first trial."""
    trials = [t for t in study.best_trials if "duplicate_of" not in t.user_attrs]
    return sorted(trials, key=lambda t: (t.user_attrs.get("size_bytes", 0), t.number))


def _fmt(name: str, value: float) -> str:
    if name == "accuracy":
        return f"{100 * value:.2f}%"
    if name == "size_bytes":
        return f"{value / 1e6:.3f} MB" if value >= 1e5 else f"{value / 1e3:.1f} kB"
    if name == "latency_ms":
        return f"{value:.3f} ms"
    if name == "energy_mj":
        return f"{value:.4f} mJ"
    if name in ("flops", "params"):
        return f"{value / 1e6:.2f} M"
    return f"{value:g}"


def _vs(name: str, value: float, base: float | None) -> str:
    if base is None:
        return ""
    if name == "accuracy":
        return f" ({100 * (value - base):+.2f})"
    return f" (x{value / base:.2g})" if base else ""


def format_front(study: optuna.Study) -> str:
    """The front as a table: each figure and, in brackets, its change against the baseline
    (accuracy in points, the rest as a ratio)."""
    base = baseline_of(study)
    trials = front(study)
    if not trials:
        return f"study {study.study_name!r} has no completed trial yet"
    header = ["trial", *FIGURES, "plan"]
    rows = []
    for t in trials:
        row = [f"#{t.number}" + (" (baseline)" if base and base.get("trial") == t.number else "")]
        for name in FIGURES:
            v = t.user_attrs.get(name)
            row.append("-" if v is None else _fmt(name, v) + _vs(name, v, base.get(name) if base else None))
        plan = t.user_attrs.get("plan") or t.params
        row.append(", ".join(f"{k}={v:g}" for k, v in plan.items() if k != "version"))
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    n_done = sum(1 for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    lines.append(
        f"{len(trials)} Pareto-optimal of {n_done} complete trials in study {study.study_name!r}"
        + ("" if base else " (no baseline measured yet)")
    )
    return "\n".join(lines)


def progress_line(
    study: optuna.Study, trial: optuna.trial.FrozenTrial, *, done: int, total: int, elapsed_s: float
) -> str:
    state = trial.state.name.lower()
    duration = trial.duration.total_seconds() if trial.duration else 0.0
    head = f"[{done}/{total}] trial #{trial.number} {state} in {duration:.1f} s"
    if trial.state != optuna.trial.TrialState.COMPLETE:
        reason = trial.user_attrs.get(FAIL_ATTR, "")
        return f"{head}: {reason}" if reason else head
    base = baseline_of(study) or {}
    figs = " ".join(
        f"{n.split('_')[0]}={_fmt(n, trial.user_attrs[n])}{_vs(n, trial.user_attrs[n], base.get(n))}"
        for n in ("accuracy", "size_bytes", "latency_ms")
        if n in trial.user_attrs
    )
    m, s = divmod(int(elapsed_s), 60)
    return f"{head} | {figs} | front: {len(front(study))}{_best_so_far(study, base)} | elapsed {m}:{s:02d}"


def _best_so_far(study: optuna.Study, base: dict) -> str:
    """The smallest complete plan within 1 point of the baseline's accuracy, as the current best."""
    if not base:
        return ""
    good = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.user_attrs.get("accuracy", 0) >= base["accuracy"] - 0.01 and "size_bytes" in t.user_attrs
    ]
    if not good:
        return ""
    best = min(good, key=lambda t: (t.user_attrs["size_bytes"], t.user_attrs["latency_ms"]))
    smaller = base["size_bytes"] / best.user_attrs["size_bytes"]
    faster = base["latency_ms"] / best.user_attrs["latency_ms"]
    return f" | best within 1 pt: #{best.number} {smaller:.1f}x smaller, {faster:.1f}x faster"
