"""What a tradeoff study stores, and how it is read back: every key in one place.

Study user attributes: ``tradeoff:config`` (the SearchConfig, JSON), ``tradeoff:baseline``
(the uncompressed model's figures), ``tradeoff:teacher`` (the teacher artifact's id, SHA-256
and task fingerprint), ``tradeoff:budget`` (measured plans the workers stop at),
``tradeoff:sampler`` (the sampler policy and why, one line), ``tradeoff:sensitivity`` (the
sensitivity table of a study that allocates per layer: artifact id, SHA-256, summary).

Trial user attributes: ``plan`` (``Plan.to_dict()``: per-layer values in full), ``plan_text``
(``format_plan``: per-layer values summarised),
every figure of ``Measurement`` with its ``*_method``, ``role`` (baseline / single-technique /
space-filling for enqueued plans), ``duplicate_of`` (a re-proposed plan: the trial whose
figures it copied), ``fail_reason``, ``skipped_layers``, ``int8_form`` (``kernels`` or
``weights``: which int8 form an ONNX runtime ran, so that export rebuilds that one),
``worker`` and ``time_*`` (seconds per step), ``finetune_curve`` (validation accuracy at the
fine-tune's checkpoints), ``stopped`` (a pruned plan: where and why), ``kept_model`` (the
deployed model in the artifact store; ``weights`` in older studies), ``facts``, ``reused_float``
(the trial that trained the float model it quantized). Study attributes
``tradeoff:float:<structure>`` (a fine-tuned float model per structure) and
``tradeoff:dropped:<trial>`` (a trial's kept model removed). Constraints are Optuna's own
(``trial.set_constraint``): <= 0 is feasible.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

CONFIG_ATTR = "tradeoff:config"
BASELINE_ATTR = "tradeoff:baseline"
TEACHER_ATTR = "tradeoff:teacher"
BUDGET_ATTR = "tradeoff:budget"
SAMPLER_ATTR = "tradeoff:sampler"
SENSITIVITY_ATTR = "tradeoff:sensitivity"  # the sensitivity table's artifact, SHA-256 and summary

PLAN_ATTR = "plan"
PLAN_TEXT_ATTR = "plan_text"  # the plan as one line, for the dashboard's trial table
ROLE_ATTR = "role"
DUPLICATE_ATTR = "duplicate_of"
FAIL_ATTR = "fail_reason"
SKIPPED_ATTR = "skipped_layers"
INT8_FORM_ATTR = "int8_form"
WORKER_ATTR = "worker"
HEARTBEAT_ATTR = "heartbeat_interval_s"  # the interval its worker beats at: no grace shorter fails it
TIME_PREFIX = "time_"
SIBLING_ROLE = "sibling"  # role of a queued post-training variant (other bit-width) of a trained structure
SIBLING_OF_ATTR = "sibling_of"  # the trial whose fine-tuned float model a variant quantizes
CURVE_ATTR = "finetune_curve"  # accuracy of the float model at the fine-tune's checkpoints
STOPPED_ATTR = "stopped"  # why a plan was pruned: before fine-tuning (a constraint), or at a checkpoint
KEPT_ATTR = "kept_model"  # the deployed model kept in the artifact store: id, SHA-256, bytes
LEGACY_KEPT_ATTR = "weights"  # its name in studies made before 2026-12: read, never written
FACTS_ATTR = "facts"  # what the knobs made of the model (weight bits, sparse, from scratch)
REUSED_ATTR = "reused_float"  # the trial quantized a fine-tuned float model stored by another trial
FLOAT_PREFIX = "tradeoff:float:"  # study attribute per structure: its fine-tuned float model
DROPPED_PREFIX = "tradeoff:dropped:"  # study attribute per trial whose kept model was removed


def constraints_of(trial: optuna.trial.FrozenTrial | Any) -> dict[str, float]:
    """The trial's constraint values by name (<= 0 is met). Optuna 5 gives a mapping; a
    sequence (Optuna's older list form, or a trial read by other means) is named by position."""
    values = getattr(trial, "constraints", trial)
    if values is None:
        return {}
    if isinstance(values, Mapping):
        return {str(k): float(v) for k, v in values.items()}
    return {str(i): float(v) for i, v in enumerate(values)}


def broken_constraints(trial: optuna.trial.FrozenTrial | Any) -> list[str]:
    """The names of the constraints the trial does not meet (empty when it meets all)."""
    return [name for name, value in constraints_of(trial).items() if not value <= 0]


def feasible(trial: optuna.trial.FrozenTrial | Any) -> bool:
    """Whether the trial meets every constraint of its study (a trial without any does)."""
    return not broken_constraints(trial)


def plan_of(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The trial's plan as stored (``plan``), else its Optuna params."""
    return dict(trial.user_attrs.get(PLAN_ATTR) or trial.params)


def plan_words(trial: optuna.trial.FrozenTrial) -> str:
    """The trial's plan in one line, with what its knobs did where they say it in words (the
    blocks a depth value dropped, from the trial's ``facts``)."""
    from tradeoff.spaces import format_plan

    facts = trial.user_attrs.get(FACTS_ATTR)
    return format_plan(plan_of(trial), facts if isinstance(facts, Mapping) else None)


def baseline_of(study: optuna.Study) -> dict | None:
    """The baseline trial's record (every figure and its trial number), None until it is measured."""
    baseline = study.user_attrs.get(BASELINE_ATTR)
    return baseline if isinstance(baseline, dict) else None


def baseline_latency(study: optuna.Study) -> float | None:
    """The baseline trial's latency, which every later latency is scaled by (None until the
    baseline is measured, or for a study made before the runtimes)."""
    baseline = baseline_of(study)
    if baseline is None or baseline.get("latency_ratio") is None:
        return None
    return float(baseline["latency_ms"])
