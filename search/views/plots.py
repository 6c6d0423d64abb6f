"""The study drawn: the front against the baseline as an interactive HTML page (Plotly) and a
PNG, and the sensitivity table as a heat map (``tradeoff report``). The text views are in
``search.views.report``."""

from __future__ import annotations

import optuna

from tradeoff.search.study.records import ROLE_ATTR, baseline_of, feasible, plan_words
from tradeoff.search.trial.figures import FIGURES
from tradeoff.search.views.report import format_figure, front, front_of, objectives_of, versus


def _label(name: str) -> str:
    return FIGURES[name].label


def _axis(name: str, t: optuna.trial.FrozenTrial) -> float:
    return float(t.user_attrs[name]) * FIGURES[name].scale


def _groups(study: optuna.Study):
    """(objectives, [(label, style, trials)] for each kind of point in drawing order, the front
    by size), from one read of the study's trials."""
    from tradeoff.search.views.cost import measured

    objectives = objectives_of(study)
    trials = measured(study.get_trials(deepcopy=False), objectives)
    front_trials = front_of(trials, objectives)
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


def _scatter(x: str, y: str, label: str, style: dict, trials, *, showlegend: bool = True):
    """One kind of point (``_groups``) of figure ``y`` against ``x``, each trial's plan in its
    hover text."""
    import plotly.graph_objects as go

    return go.Scatter(
        x=[_axis(x, t) for t in trials],
        y=[_axis(y, t) for t in trials],
        mode="markers",
        marker=style,
        name=label,
        legendgroup=label,
        showlegend=showlegend,
        text=[f"#{t.number}: {plan_words(t)}" for t in trials],
        hovertemplate="%{text}<br>%{x:.4g}, %{y:.4g}<extra>" + label + "</extra>",
    )


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
            if trials:
                fig.add_trace(_scatter(x, y, label, style, trials, showlegend=(i == 0)), row=r + 1, col=c + 1)
        for axis, name in (("x", x), ("y", y)):
            kind = "log" if FIGURES[name].log_axis else "linear"
            getattr(fig, f"update_{axis}axes")(type=kind, title_text=_label(name), row=r + 1, col=c + 1)
    base = baseline_of(study) or {}
    header = ["trial", "plan", *[_label(o) for o in objectives]]
    cells = [[f"#{t.number}" for t in front_trials], [plan_words(t) for t in front_trials]]
    for o in objectives:
        cells.append(
            [
                f"{format_figure(o, t.user_attrs[o])}{versus(o, t.user_attrs[o], base.get(o))}"
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


def front_panel(study: optuna.Study):
    """One Plotly panel for a narrow card (the dashboard's): accuracy against the study's first
    other objective in real units (log axes where the figure's are), the front, the single
    techniques and the baseline marked, each point's plan in its hover text; no fixed width."""
    import plotly.graph_objects as go

    objectives, groups, front_trials = _groups(study)
    y = "accuracy" if "accuracy" in objectives else objectives[-1]
    x = next((o for o in objectives if o != y), y)
    fig = go.Figure()
    for label, style, trials in groups:
        if trials:
            fig.add_trace(_scatter(x, y, label, style, trials))
    fig.update_xaxes(type="log" if FIGURES[x].log_axis else "linear", title_text=_label(x))
    fig.update_yaxes(type="log" if FIGURES[y].log_axis else "linear", title_text=_label(y))
    n = sum(len(g[2]) for g in groups[:3])
    fig.update_layout(
        title=f"front in real units: {len(front_trials)} Pareto-optimal of {n} measured trials",
        height=480,
        template="plotly_white",
        legend=dict(orientation="h", y=-0.2),
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

    from tradeoff.search.study.sensitivity import title
    from tradeoff.spaces.sensitivity import compression_order

    techniques = [t for t, rows in table.rows.items() if rows]
    metric = table.metric
    scale = 1.0 if metric == "loss" else 100.0
    fig = make_subplots(rows=1, cols=len(techniques), subplot_titles=[title(t) for t in techniques])
    for i, technique in enumerate(techniques, 1):
        rows = table.rows[technique]
        values = compression_order(technique, {v for r in rows for v in r["points"]})
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
