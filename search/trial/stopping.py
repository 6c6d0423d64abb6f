"""Stopping a fine-tune that cannot reach the front.

Optuna's pruners compare one intermediate value against other trials' values at the same step:
single-objective. A compressed plan is worth finishing if it can still land on the Pareto
front, and every figure except accuracy is known before its fine-tune starts (size, MACs,
latency and energy depend on the network's shape, measured on the deployed form of the
untrained network). So the question at a checkpoint is one of dominance:

    at checkpoint f (a fraction of the fine-tune), the plan's float model scores a_f on the
    validation images. The study's own completed plans of the same kind (a student distilled
    from scratch, or a changed teacher fine-tuned) say how much accuracy a plan gained after
    checkpoint f at most: G_f = max(final accuracy - a_f). The plan can reach at most
    a_f + G_f + MARGIN. If a measured, feasible plan is at least that accurate and at least as
    good on every other objective (strictly better on one), the plan cannot be on the front:
    it stops, recorded as pruned with the checkpoint and this reason. With reuse, a fine-tune
    also makes the float model that the other bit-widths quantize: it stops only if each of
    them is dominated too.

Safe by construction in two ways: nothing stops before ``MIN_HISTORY`` completed plans of the
same kind gave their gains (no rule, no stop), and the bound is the largest gain seen plus a
margin, not a typical one. How often it was wrong on the replayed default run is in
BENCHMARKS.md ("Cheaper trials"). The checkpoints' accuracies are recorded on every trial
(``finetune_curve``), stopped or not, which is what the rule learns from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna

from tradeoff.search.study.records import CURVE_ATTR, DUPLICATE_ATTR, feasible
from tradeoff.search.trial.figures import FIGURES
from tradeoff.search.views.cost import dominates

CHECKPOINTS = (0.25, 0.5)  # fractions of the fine-tune's steps where its accuracy is taken
MIN_HISTORY = 8  # completed plans of the same kind with a curve before the rule may stop one
MARGIN = 0.02  # accuracy added to the largest gain seen
CURVE_IMAGES = 512  # validation images the checkpoint accuracy is taken on, at most


class StopTraining(Exception):
    """Raised at a checkpoint by the rule; the runner records the trial as pruned."""

    def __init__(self, reason: str, checkpoint: float, step: int, accuracy: float):
        super().__init__(reason)
        self.reason, self.checkpoint, self.step, self.accuracy = reason, checkpoint, step, accuracy


def curve_point(curve: Mapping[str, Any], fraction: float) -> float | None:
    for f, acc in curve.get("points", ()):
        if abs(float(f) - fraction) < 1e-9:
            return float(acc)
    return None


def gains(trials: Sequence[optuna.trial.FrozenTrial], fraction: float, from_scratch: bool) -> list[float]:
    """Final accuracy minus the accuracy at checkpoint ``fraction``, over completed plans of the
    same kind that recorded a curve."""
    out = []
    for t in trials:
        curve = t.user_attrs.get(CURVE_ATTR)
        if (
            t.state != optuna.trial.TrialState.COMPLETE
            or DUPLICATE_ATTR in t.user_attrs
            or not isinstance(curve, Mapping)
            or bool(curve.get("from_scratch")) != from_scratch
            or "accuracy" not in t.user_attrs
        ):
            continue
        at = curve_point(curve, fraction)
        if at is not None:
            out.append(float(t.user_attrs["accuracy"]) - at)
    return out


def judge(
    trials: Sequence[optuna.trial.FrozenTrial],
    objectives: Sequence[str],
    candidates: Callable[[], Sequence[Mapping[str, float]]],
    *,
    fraction: float,
    accuracy: float,
    from_scratch: bool,
) -> str | None:
    """Why a plan scoring ``accuracy`` at checkpoint ``fraction`` cannot reach the front of
    ``trials``; None when it may, or when the rule cannot tell (too little history, an objective
    other than accuracy that needs the trained model).

    ``candidates()`` gives the untrained figures of every model this fine-tune would make: the
    plan's own, and with reuse the other bit-widths that would quantize the same float model
    (stopping the fine-tune forfeits them all). It is called only when some measured plan is at
    least as accurate as the bound (most checkpoints need no measurement); every candidate must
    be dominated for the plan to stop."""
    if "accuracy" not in objectives:
        return None
    history = gains(trials, fraction, from_scratch)
    if len(history) < MIN_HISTORY:
        return None
    best = min(1.0, accuracy + max(history) + MARGIN)
    contenders = [
        t
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE
        and DUPLICATE_ATTR not in t.user_attrs
        and feasible(t)
        and all(o in t.user_attrs for o in objectives)
        and float(t.user_attrs["accuracy"]) >= best
    ]
    if not contenders:
        return None
    directions = [FIGURES[o].direction for o in objectives]
    beaten_by = []
    for figures in candidates():
        if any(o != "accuracy" and o not in figures for o in objectives):
            return None
        plan = [best if o == "accuracy" else float(figures[o]) for o in objectives]
        better = next(
            (
                t
                for t in contenders
                if dominates([float(t.user_attrs[o]) for o in objectives], plan, directions)
            ),
            None,
        )
        if better is None:
            return None
        beaten_by.append(f"#{better.number}")
    kind = "distilled students" if from_scratch else "fine-tuned plans"
    models = (
        "its model is" if len(beaten_by) == 1 else f"each of the {len(beaten_by)} models it would make is"
    )
    return (
        f"at {fraction:.0%} of its fine-tune it scored {accuracy:.2%}; the largest later gain of "
        f"{len(history)} completed {kind} was {100 * max(history):+.1f} points, so it could reach "
        f"{best:.2%} at most (with a {100 * MARGIN:.0f}-point margin), and {models} beaten on every "
        f"objective (by {', '.join(beaten_by)})"
    )
