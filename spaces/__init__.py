"""What can be searched: one module per compression knob, and the Plan that holds their values."""

from __future__ import annotations

from spaces._base import KNOBS, ApplyContext, Knob, PlanError, SpaceError, register_knob
from spaces.plan import BASELINE, PLAN_VERSION, Plan, apply_plan, default_space, suggest_plan, validate_space

__all__ = [
    "BASELINE",
    "KNOBS",
    "PLAN_VERSION",
    "ApplyContext",
    "Knob",
    "Plan",
    "PlanError",
    "SpaceError",
    "apply_plan",
    "default_space",
    "register_knob",
    "suggest_plan",
    "validate_space",
]
