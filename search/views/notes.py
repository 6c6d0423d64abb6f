"""What tradeoff knows, written into the study for optuna-dashboard: a note on the study and
one on each measured trial (Markdown, ``optuna_dashboard.save_note``'s storage) and the front
as a saved Plotly figure (``save_plotly_graph_object``), in real units with the plans named.

Written by the worker that finishes a trial, best effort: a note that cannot be written never
fails a trial (the study's figures are in its trials either way). The dashboard shows them on
the study page (its note and the "front in real units" figure) and each trial's page (its note;
the kept model files, uploaded as Optuna artifacts of the trial, under Artifacts).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Mapping
from typing import Any

import optuna

from tradeoff.search.study.records import (
    BASELINE_ATTR,
    CONFIG_ATTR,
    FAIL_ATTR,
    REUSED_ATTR,
    ROLE_ATTR,
    SAMPLER_ATTR,
    STOPPED_ATTR,
    TEACHER_ATTR,
    feasible,
    plan_words,
)
from tradeoff.search.trial.figures import FIGURES

ENV_NOTES = "TRADEOFF_DASHBOARD_NOTES"  # "0": write none (importing optuna-dashboard costs ~1 s a run)
FRONT_FIGURE = "tradeoff-front"  # the saved Plotly figures' ids: rewritten, not added, as the study moves
HYPERVOLUME_FIGURE = "tradeoff-hypervolume"
SENSITIVITY_FIGURE = "tradeoff-sensitivity"
HYPERVOLUME_TRIALS = 300  # the history is drawn up to this many complete trials (its cost grows with them)


def _interval(values: Any, text) -> str:
    if isinstance(values, (list, tuple)) and len(values) == 2:
        return f" (95 % interval {text(values[0])}-{text(values[1])})"
    return ""


def figures_text(attrs: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> list[str]:
    """One Markdown list item per figure of a trial: the value, its change against the baseline,
    its interval or spread where one is recorded, and how it was obtained."""
    lines = []
    for name, figure in FIGURES.items():
        if name not in attrs:
            continue
        value = float(attrs[name])
        text = f"- **{figure.label}**: {figure.text(value)}"
        if baseline and name in baseline:
            text += figure.versus(value, float(baseline[name]))
        if name == "accuracy":
            text += _interval(attrs.get("accuracy_ci"), lambda v: f"{float(v):.2%}")
            if attrs.get("accuracy_images"):
                text += f" on {int(attrs['accuracy_images'])} validation images"
        if name == "latency_ms" and "latency_p10_ms" in attrs:
            text += f" (p10-p90 {attrs['latency_p10_ms']:.4g}-{attrs['latency_p90_ms']:.4g} ms)"
        method = attrs.get(figure.method_key)
        if method:
            text += f"; {method}"
        lines.append(text)
    return lines


def trial_note(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    """The note of a measured (or pruned, or failed) trial."""
    attrs = trial.user_attrs
    baseline = study.user_attrs.get(BASELINE_ATTR)
    role = attrs.get(ROLE_ATTR) or "proposed by the sampler"
    lines = [f"## Trial {trial.number}: {plan_words(trial)}", "", f"Role: {role}."]
    if REUSED_ATTR in attrs:
        lines.append(
            f"Reused the fine-tuned float model of trial {attrs[REUSED_ATTR]} (only quantized here)."
        )
    if trial.state == optuna.trial.TrialState.COMPLETE:
        lines.append("Meets every constraint of the study." if feasible(trial) else "Breaks a constraint.")
    elif STOPPED_ATTR in attrs:
        lines.append(f"Stopped: {json.dumps(attrs[STOPPED_ATTR].get('reason', attrs[STOPPED_ATTR]))}.")
    elif FAIL_ATTR in attrs:
        lines.append(f"Failed: {attrs[FAIL_ATTR]}.")
    figures = figures_text(attrs, baseline)
    if figures:
        lines += ["", "### Figures", *figures]
    if trial.state == optuna.trial.TrialState.COMPLETE:
        lines += [
            "",
            "### Export it",
            f"`tradeoff export --study-name {study.study_name} --trial {trial.number} "
            f"--output trial-{trial.number}`",
        ]
    return "\n".join(lines)


def study_note(study: optuna.Study) -> str:
    """The study's note: its task and teacher, runtime, sampler, objectives and constraints, and
    how to read the figures."""
    from tradeoff.search.views.report import constraints_line

    attrs = study.user_attrs
    config = json.loads(attrs.get(CONFIG_ATTR) or "{}")
    teacher = attrs.get(TEACHER_ATTR) or {}
    lines = [f"# Study {study.study_name}", ""]
    lines.append(f"- **Task**: {config.get('task', '?')}, model {config.get('model', '?')}")
    if teacher:
        acc = teacher.get("val_accuracy")
        lines.append(
            f"- **Teacher**: {teacher.get('source', '')}"
            + (f", validation accuracy {float(acc):.2%}" if acc is not None else "")
            + (f", test accuracy {float(teacher['test_accuracy']):.2%}" if "test_accuracy" in teacher else "")
        )
    baseline = attrs.get(BASELINE_ATTR) or {}
    if baseline:
        lines.append(f"- **Baseline**: trial {baseline.get('trial')}, {_figures_line(baseline)}")
        if "latency_threads" in baseline:
            lines.append(
                f"- **Runtime**: {config.get('runtime', '?')} on {config.get('target', 'cpu')}, "
                f"{int(baseline['latency_threads'])} threads"
            )
    if attrs.get(SAMPLER_ATTR):
        lines.append(f"- **Sampler**: {attrs[SAMPLER_ATTR].removeprefix('sampler ')}")
    lines.append(f"- **Objectives**: {', '.join(config.get('objectives') or [])}")
    bounds = constraints_line(study)
    lines.append(f"- **{bounds[0].upper()}{bounds[1:]}**" if bounds else "- **Constraints**: none")
    lines += [
        "",
        "## Reading the figures",
        "Each trial's note gives every figure with how it was measured: accuracy with its exact binomial "
        "95 % interval on the validation split (the test split is kept for `tradeoff export`), latency as "
        "a ratio to the baseline timed interleaved in the runtime users deploy, size as the bytes of the "
        "deployed file, energy measured by a hardware counter or estimated (its method says which). The "
        "figure 'front in real units' plots size and latency on log axes with each plan named.",
    ]
    return "\n".join(lines)


def _figures_line(values: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{FIGURES[n].short} {FIGURES[n].text(float(values[n]))}" for n in FIGURES if n in values
    )


def front_figure(study: optuna.Study):
    """The front in real units, plans named, the baseline marked (``views.plots.figure``)."""
    from tradeoff.search.views.plots import front_panel

    return front_panel(study)


def hypervolume_figure(study: optuna.Study):
    """Optuna's hypervolume history of a multi-objective study, against a fixed reference point:
    accuracy 0 and every other figure 1.1 times the largest measured (or the baseline's); None
    for one objective, before two complete trials, or past ``HYPERVOLUME_TRIALS``."""
    from tradeoff.search.views.report import objectives_of

    objectives = objectives_of(study)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(study.directions) < 2 or not 2 <= len(complete) <= HYPERVOLUME_TRIALS:
        return None
    if len(objectives) != len(study.directions):
        return None
    reference = []
    for name, direction in zip(objectives, study.directions):
        values = [float(v) for t in complete if t.values for v in [t.values[objectives.index(name)]]]
        if direction == optuna.study.StudyDirection.MAXIMIZE:
            reference.append(0.0 if FIGURES[name].unit == "fraction" else 0.9 * min(values))
        else:
            reference.append(1.1 * max(values))
    with warnings.catch_warnings():  # experimental since Optuna 3.3, stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fig = optuna.visualization.plot_hypervolume_history(study, reference)
    fig.update_layout(
        title="hypervolume of the front over trials (reference: "
        + ", ".join(f"{n} {FIGURES[n].text(r)}" for n, r in zip(objectives, reference))
        + ")"
    )
    return fig


def save_sensitivity(study: optuna.Study, table) -> None:
    """The study's sensitivity table as heat maps (``views.plots.sensitivity_figure``), saved
    for the dashboard once it is measured; best effort, as the notes."""
    if os.environ.get(ENV_NOTES, "1").strip() == "0":
        return
    with contextlib.suppress(Exception):
        from optuna_dashboard import save_plotly_graph_object

        from tradeoff.search.views.plots import sensitivity_figure

        figure = sensitivity_figure(table)
        if figure is not None:
            save_plotly_graph_object(study, figure, graph_object_id=SENSITIVITY_FIGURE)


def write_notes(study: optuna.Study, trial: optuna.trial.FrozenTrial | None, *, log=None) -> bool:
    """Write ``trial``'s note, the study's note and the front figure; False (and one line to
    ``log``) when the dashboard's package or the storage refused, or ``$TRADEOFF_DASHBOARD_NOTES``
    is 0: never raises."""
    if os.environ.get(ENV_NOTES, "1").strip() == "0":
        return False
    try:
        from optuna_dashboard import save_note, save_plotly_graph_object

        if trial is not None:  # the finished trial, addressed as a live one (what save_note takes)
            save_note(optuna.Trial(study, trial._trial_id), trial_note(study, trial))
        save_note(study, study_note(study))
        with contextlib.suppress(ValueError):  # no complete trial yet: no front to draw
            save_plotly_graph_object(study, front_figure(study), graph_object_id=FRONT_FIGURE)
        history = hypervolume_figure(study)
        if history is not None:
            save_plotly_graph_object(study, history, graph_object_id=HYPERVOLUME_FIGURE)
        return True
    except Exception as e:  # noqa: BLE001 - notes are a view: a trial never fails for one
        if log is not None:
            reason = str(e).splitlines()[0] if str(e) else ""
            log(f"the dashboard's notes were not written ({type(e).__name__}: {reason})")
        return False
