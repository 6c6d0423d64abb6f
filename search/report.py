"""Text views of a study: the Pareto front against the baseline, and a one-line progress."""

from __future__ import annotations

import optuna

from tradeoff.search.figures import FIGURES
from tradeoff.search.records import (
    BASELINE_ATTR,
    CONFIG_ATTR,
    DUPLICATE_ATTR,
    FAIL_ATTR,
    ROLE_ATTR,
    SIBLING_OF_ATTR,
    SIBLING_ROLE,
    STOPPED_ATTR,
    broken_constraints,
    feasible,
    plan_of,
)
from tradeoff.spaces import format_plan


def baseline_of(study: optuna.Study) -> dict | None:
    return study.user_attrs.get(BASELINE_ATTR)


def objectives_of(study: optuna.Study) -> tuple[str, ...]:
    """The figures the study trades off (a scalarized study still has them in its config)."""
    from tradeoff.search.config import LEGACY_OBJECTIVES, SearchConfig

    text = study.user_attrs.get(CONFIG_ATTR)
    return SearchConfig.from_json(text).objectives if text else LEGACY_OBJECTIVES


def front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The Pareto-optimal trials over the study's figures (only feasible ones where the study
    has constraints), by size; a plan the sampler proposed again (``duplicate_of``) is shown
    once, as its first trial."""
    from tradeoff.search.cost import measured

    objectives = objectives_of(study)
    return _front_of(measured(study.get_trials(deepcopy=False), objectives), objectives)


def _front_of(trials: list[optuna.trial.FrozenTrial], objectives) -> list[optuna.trial.FrozenTrial]:
    from tradeoff.search.cost import pareto

    ok = [t for t in trials if feasible(t)]
    return sorted(pareto(ok, objectives), key=lambda t: (t.user_attrs.get("size_bytes", 0), t.number))


def noise_ties(trials: list[optuna.trial.FrozenTrial], objectives) -> dict[int, int]:
    """{trial number: the front trial it ties with}: a front trial whose only advantage over
    another front trial is an accuracy higher by less than the noise of the validation split
    (:func:`~tradeoff.search.measure.accuracy.differ_beyond_noise`); the other is at least as
    good on every other objective. Such a plan is on the front by chance of a few images."""
    from tradeoff.search.measure.accuracy import differ_beyond_noise

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


def _vs(name: str, value: float, base: float | None) -> str:
    return FIGURES[name].versus(value, base) if name in FIGURES else ""


def format_front(study: optuna.Study) -> str:
    """The front as a table: each figure and, in brackets, its change against the baseline
    (accuracy in points, the rest as a ratio)."""
    from tradeoff.search.cost import measured

    base = baseline_of(study)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    infeasible = [t for t in complete if not feasible(t)]
    objectives = objectives_of(study)
    trials = _front_of(measured(complete, objectives), objectives)  # from the one read above
    if not trials:
        if complete:
            return (
                f"study {study.study_name!r}: none of its {len(complete)} complete trials meets the "
                f"study's constraints yet ({_infeasible_summary(infeasible)})"
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
            row.append(
                "-" if v is None else format_figure(name, v) + _vs(name, v, base.get(name) if base else None)
            )
        row.append(format_plan(plan_of(t)))
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
    if ties:
        n = max(int(t.user_attrs.get("accuracy_images") or 0) for t in trials)
        lines.append(
            f"~#k: a tie with #k: its only advantage over #k is an accuracy higher by less than the 95 % "
            f"noise of {n} validation images"
        )
    return "\n".join(lines)


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
    parts += [f"{during} fine-tunes stopped (could not reach the front)"] if during else []
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
        f"{_vs(n, trial.user_attrs[n], base.get(n))}"
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


def _label(name: str) -> str:
    return FIGURES[name].label


def _axis(name: str, t: optuna.trial.FrozenTrial) -> float:
    return float(t.user_attrs[name]) * FIGURES[name].scale


def _plan_text(t: optuna.trial.FrozenTrial) -> str:
    return format_plan(plan_of(t))


def _groups(study: optuna.Study):
    """(objectives, [(label, style, trials)] for each kind of point in drawing order, the front
    by size), from one read of the study's trials."""
    from tradeoff.search.cost import measured

    objectives = objectives_of(study)
    trials = measured(study.get_trials(deepcopy=False), objectives)
    front_trials = _front_of(trials, objectives)
    on_front = {t.number for t in front_trials}
    base = baseline_of(study) or {}
    groups = [
        ("infeasible", dict(color="#d0d0d0", symbol="x", size=7), [t for t in trials if not feasible(t)]),
        (
            "dominated",
            dict(color="#b8b8b8", symbol="circle", size=7),
            [t for t in trials if feasible(t) and t.number not in on_front],
        ),
        (
            "Pareto front",
            dict(color="#1f77b4", symbol="circle", size=10),
            [t for t in trials if t.number in on_front],
        ),
        (
            "single technique",
            dict(color="#ff7f0e", symbol="diamond", size=12, line=dict(width=1, color="black")),
            [t for t in trials if t.user_attrs.get(ROLE_ATTR) == "single-technique"],
        ),
        (
            "baseline",
            dict(color="#d62728", symbol="star", size=16, line=dict(width=1, color="black")),
            [t for t in trials if t.number == base.get("trial")],
        ),
    ]
    return objectives, groups, front_trials


def figure(study: optuna.Study):
    """Plotly figure: every pair of the study's figures, then a table of the front."""
    import itertools

    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    objectives, groups, front_trials = _groups(study)
    pairs = [p for p in itertools.combinations(objectives, 2)] or [(objectives[0], objectives[0])]
    if "accuracy" in objectives:  # accuracy on the y axis of every pair that has it
        pairs = [(b, a) if a == "accuracy" else (a, b) for a, b in pairs]
    cols = 2 if len(pairs) > 1 else 1
    rows = -(-len(pairs) // cols)
    fig = make_subplots(
        rows=rows + 1,
        cols=cols,
        specs=[[{"type": "xy"}] * cols for _ in range(rows)]
        + [[{"type": "table", "colspan": cols}] + [None] * (cols - 1)],
        row_heights=[1.0] * rows + [0.9],
        vertical_spacing=0.06,
        subplot_titles=[f"{_label(y)} vs {_label(x)}" for x, y in pairs],
    )
    for i, (x, y) in enumerate(pairs):
        r, c = divmod(i, cols)
        for label, style, trials in groups:
            if not trials:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[_axis(x, t) for t in trials],
                    y=[_axis(y, t) for t in trials],
                    mode="markers",
                    marker=style,
                    name=label,
                    legendgroup=label,
                    showlegend=(i == 0),
                    text=[f"#{t.number}: {_plan_text(t)}" for t in trials],
                    hovertemplate="%{text}<br>%{x:.4g}, %{y:.4g}<extra>" + label + "</extra>",
                ),
                row=r + 1,
                col=c + 1,
            )
        for axis, name in (("x", x), ("y", y)):
            kind = "log" if FIGURES[name].log_axis else "linear"
            getattr(fig, f"update_{axis}axes")(type=kind, title_text=_label(name), row=r + 1, col=c + 1)
    base = baseline_of(study) or {}
    header = ["trial", "plan", *[_label(o) for o in objectives]]
    cells = [[f"#{t.number}" for t in front_trials], [_plan_text(t) for t in front_trials]]
    for o in objectives:
        cells.append(
            [
                f"{format_figure(o, t.user_attrs[o])}{_vs(o, t.user_attrs[o], base.get(o))}"
                for t in front_trials
            ]
        )
    fig.add_trace(
        go.Table(header=dict(values=header, align="left"), cells=dict(values=cells, align="left")),
        row=rows + 1,
        col=1,
    )
    n = sum(len(g[2]) for g in groups[:3])
    fig.update_layout(
        title=f"tradeoff study {study.study_name!r}: {len(front_trials)} Pareto-optimal of {n} "
        "measured trials",
        height=420 * rows + 60 + 28 * (len(front_trials) + 2),
        width=1200,
        template="plotly_white",
    )
    return fig


def write_png(study: optuna.Study, path: str) -> None:
    """The main plot (accuracy against size, or the first two figures) as a PNG, with
    matplotlib (Plotly's PNG export needs a browser; this must work on a bare server)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives, groups, front_trials = _groups(study)
    y = "accuracy" if "accuracy" in objectives else objectives[0]
    x = "size_bytes" if "size_bytes" in objectives else next((o for o in objectives if o != y), y)
    mpl_marker = {"x": "x", "circle": "o", "diamond": "D", "star": "*"}
    fig, ax = plt.subplots(figsize=(8, 5), dpi=150)
    for label, style, trials in groups:
        if trials:
            ax.scatter(
                [_axis(x, t) for t in trials],
                [_axis(y, t) for t in trials],
                s=style["size"] ** 2 * 0.8,
                c=style["color"],
                marker=mpl_marker[style["symbol"]],
                edgecolors="black" if "line" in style else None,
                linewidths=0.6,
                label=label,
                zorder=3 if label != "dominated" else 2,
            )
    # the staircase of this plot's own two figures: the best accuracy at each size
    stairs, best = [], -float("inf")
    for t in sorted(front_trials, key=lambda t: _axis(x, t)):
        if _axis(y, t) > best:
            best = _axis(y, t)
            stairs.append((_axis(x, t), best))
    if stairs:
        ax.step(*zip(*stairs), where="post", color="#1f77b4", linewidth=1, alpha=0.6)
    if FIGURES[x].log_axis:
        ax.set_xscale("log")
    ax.set_xlabel(_label(x))
    ax.set_ylabel(_label(y))
    ax.set_title(f"{study.study_name}: {_label(y)} vs {_label(x)}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def sensitivity_figure(table):
    """Heat maps of the sensitivity table: one per technique, a row per layer group, a column per
    measured value, the colour the effect (the table's metric) of compressing that group alone."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    techniques = [t for t in ("prune_ratio", "rank_ratio", "weight_bits") if table.rows.get(t)]
    titles = {
        "prune_ratio": "pruned at ratio",
        "rank_ratio": "low-rank at rank ratio",
        "weight_bits": "weight bits",
    }
    metric = table.metric
    scale = 1.0 if metric == "loss" else 100.0
    fig = make_subplots(rows=1, cols=len(techniques), subplot_titles=[titles[t] for t in techniques])
    for i, technique in enumerate(techniques, 1):
        rows = table.rows[technique]
        values = sorted({v for r in rows for v in r["points"]}, reverse=technique != "prune_ratio")
        z = [[r["points"][v][metric] * scale if v in r["points"] else None for v in values] for r in rows]
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=[f"{v:g}" for v in values],
                y=[r["group"] for r in rows],
                coloraxis="coloraxis",
                hovertemplate="%{y} at %{x}: %{z:.3f}<extra></extra>",
            ),
            1,
            i,
        )
    unit = "distillation-loss increase" if metric == "loss" else "accuracy drop (points)"
    height = 200 + 16 * max(len(table.rows[t]) for t in techniques)
    fig.update_layout(
        title=f"Sensitivity of each layer group alone ({unit}; measured once per study on {table.images} "
        "held-out images)",
        coloraxis={"colorscale": "Reds", "colorbar": {"title": metric}},
        height=height,
    )
    return fig


def write_report(study: optuna.Study, html_path: str, *, table=None) -> tuple[str, str]:
    """A self-contained HTML report (Plotly, its JavaScript inlined) and a PNG of the main plot
    beside it; both written to temporary names first, so a failure leaves no half file. With the
    study's sensitivity ``table``, its heat maps follow the front."""
    import os

    png_path = os.path.splitext(html_path)[0] + ".png"
    if not front(study):
        from tradeoff.search.errors import UsageError

        raise UsageError(f"study {study.study_name!r} has no measured feasible trial to report yet")
    tmp_html, tmp_png = html_path + ".tmp", png_path + ".tmp.png"
    try:
        if table is None:
            figure(study).write_html(tmp_html, include_plotlyjs=True, full_html=True)
        else:
            parts = [
                figure(study).to_html(include_plotlyjs=True, full_html=False),
                sensitivity_figure(table).to_html(include_plotlyjs=False, full_html=False),
            ]
            with open(tmp_html, "w") as f:
                f.write(
                    "<!DOCTYPE html><html><head><meta charset='utf-8'><title>tradeoff report</title></head>"
                    f"<body>{''.join(parts)}</body></html>"
                )
        write_png(study, tmp_png)
        os.replace(tmp_html, html_path)
        os.replace(tmp_png, png_path)
    finally:
        for p in (tmp_html, tmp_png):
            if os.path.exists(p):
                os.remove(p)
    return html_path, png_path
