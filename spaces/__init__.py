"""What can be searched: one module per compression knob, and the Plan that holds their values."""

from __future__ import annotations

from spaces._base import KNOBS, ApplyContext, Knob, PlanError, SpaceError, register_knob
from spaces.plan import (
    BASELINE,
    PLAN_VERSION,
    Compressed,
    Plan,
    apply_plan,
    default_space,
    probe_plans,
    space_filling_plans,
    suggest_plan,
    validate_space,
)

__all__ = [
    "BASELINE",
    "KNOBS",
    "PLAN_VERSION",
    "ApplyContext",
    "Compressed",
    "Knob",
    "Plan",
    "PlanError",
    "SpaceError",
    "apply_plan",
    "default_space",
    "probe_plans",
    "register_knob",
    "space_filling_plans",
    "suggest_plan",
    "validate_space",
]
