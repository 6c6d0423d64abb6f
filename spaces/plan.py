"""Plan: one value per knob; the only way the runner and export touch knobs."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from torch import nn

import spaces.pruning  # noqa: F401 - registers the knob
from spaces._base import KNOBS, ApplyContext, PlanError, SpaceError, ordered_knobs

PLAN_VERSION = 1


@dataclass(frozen=True)
class Plan:
    """A compression plan. Every field is a knob's value; the defaults are the uncompressed
    baseline. ``version`` lets a plan exported by an older tradeoff still load."""

    prune_ratio: float = 0.0
    version: int = PLAN_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def params(self) -> dict[str, Any]:
        """The knob values alone, as Optuna params (for ``enqueue_trial``)."""
        return {k: v for k, v in self.to_dict().items() if k != "version"}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Plan:
        """Rebuild a plan from a trial's params (or a ``to_dict()``); knobs that are absent keep
        their off value, so plans from a narrower space or an older version still load."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(params) - names
        if unknown:
            raise PlanError(f"unknown plan field(s) {sorted(unknown)}")
        version = int(params.get("version", PLAN_VERSION))
        if version > PLAN_VERSION:
            raise PlanError(
                f"plan version {version} is newer than this tradeoff understands ({PLAN_VERSION}); "
                "upgrade tradeoff"
            )
        values = {k: v for k, v in params.items() if k != "version"}
        return cls(**values, version=PLAN_VERSION)

    @property
    def is_baseline(self) -> bool:
        return all(getattr(self, k.name) == k.off for k in KNOBS.values())

    def active(self) -> dict[str, Any]:
        """The knobs this plan switches on."""
        return {k.name: getattr(self, k.name) for k in ordered_knobs() if getattr(self, k.name) != k.off}


BASELINE = Plan()


def default_space() -> dict[str, dict[str, Any]]:
    return {k.name: dict(k.default_space) for k in ordered_knobs()}


def validate_space(space: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """A complete, checked space: every knob's bounds, the user's where given."""
    space = dict(space or {})
    unknown = set(space) - set(KNOBS)
    if unknown:
        raise SpaceError(f"unknown knob(s) {sorted(unknown)}; known: {sorted(KNOBS)}")
    return {k.name: k.validate(dict(space.get(k.name, k.default_space))) for k in ordered_knobs()}


def suggest_plan(trial: optuna.Trial, space: Mapping[str, Mapping[str, Any]]) -> Plan:
    """Ask the trial for one value per knob in ``space``."""
    return Plan(**{k.name: k.suggest(trial, space[k.name]) for k in ordered_knobs() if k.name in space})


def apply_plan(teacher: nn.Module, plan: Plan, ctx: ApplyContext) -> nn.Module:
    """A compressed copy of ``teacher``: structural knobs in order, then a fine-tune against
    the teacher when any of them changed the model. ``teacher`` itself is never changed."""
    active = plan.active()
    for name, value in active.items():
        KNOBS[name].check(value)
    model = copy.deepcopy(teacher)
    structural = False
    for knob in ordered_knobs():
        if knob.name in active:
            model = knob.apply(model, active[knob.name], ctx)
            structural |= knob.structural
    if structural and ctx.finetune is not None:
        model = ctx.finetune(model)
    return model.eval()
