"""The knob contract and registry.

A knob is one compression technique with one searched value. ``suggest_plan`` asks every
registered knob for its value (``Knob.suggest``); ``apply_plan`` applies the knobs whose value
is not ``off``, in ascending ``order``, each through ``Knob.apply`` on a model that the caller
already copied (the teacher is never touched). A knob owns nothing between calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from torch import nn


class SpaceError(ValueError):
    """A search space that cannot be searched (bounds out of range, unknown knob); one line."""


class PlanError(RuntimeError):
    """A plan that cannot be applied to this model; the trial fails with this reason."""


@dataclass
class ApplyContext:
    """What a knob may use while it changes a model.

    ``finetune`` trains a changed model briefly against the teacher (given by the runner; None
    means no fine-tuning); ``skipped`` collects ``"knob: layer: reason"`` for every layer a knob
    could not handle.
    """

    example_input: torch.Tensor
    num_classes: int
    finetune: Callable[[nn.Module], nn.Module] | None = None
    skipped: list[str] = field(default_factory=list)


class Knob:
    """Base class of a knob. Subclasses set the class attributes and implement ``apply``."""

    name: str = ""
    off: Any = None  # the value that leaves the model unchanged
    order: int = 0  # application order within a plan
    structural: bool = False  # changes the architecture: the model is fine-tuned afterwards
    limits: tuple[float, float] = (0.0, 1.0)  # hard bounds of any user space
    default_space: dict[str, Any] = {}
    help: str = ""

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Check one space entry (``{"low", "high", "step"}`` or ``{"choices"}``) and return it
        normalised; raise SpaceError naming the knob otherwise."""
        lo, hi = self.limits
        if "choices" in spec:
            choices = list(spec["choices"])
            if not choices:
                raise SpaceError(f"`{self.name}` needs at least one choice.")
            for c in choices:
                if not isinstance(c, (int, float)) or not lo <= c <= hi:
                    raise SpaceError(f"`{self.name}` choice {c!r} is outside [{lo}, {hi}].")
            return {"choices": choices}
        unknown = set(spec) - {"low", "high", "step"}
        if unknown:
            raise SpaceError(f"`{self.name}` has unknown bound(s) {sorted(unknown)}.")
        low = float(spec.get("low", self.default_space.get("low", lo)))
        high = float(spec.get("high", self.default_space.get("high", hi)))
        step = spec.get("step", self.default_space.get("step"))
        if not (math.isfinite(low) and math.isfinite(high)):
            raise SpaceError(f"`{self.name}` bounds must be finite numbers.")
        if not lo <= low <= high <= hi:
            raise SpaceError(
                f"`{self.name}` bounds [{low}, {high}] must satisfy {lo} <= low <= high <= {hi}."
            )
        if step is not None:
            step = float(step)
            if step <= 0:
                raise SpaceError(f"`{self.name}` step must be > 0.")
            if high > low and abs(round((high - low) / step) * step - (high - low)) > 1e-9:
                # Optuna would silently shrink the upper bound; say so instead.
                raise SpaceError(f"`{self.name}` range [{low}, {high}] is not a multiple of step {step}.")
        return {"low": low, "high": high, "step": step}

    def suggest(self, trial: optuna.Trial, spec: dict[str, Any]) -> Any:
        if "choices" in spec:
            return trial.suggest_categorical(self.name, spec["choices"])
        return trial.suggest_float(self.name, spec["low"], spec["high"], step=spec.get("step"))

    def check(self, value: Any) -> None:
        """Reject a value that would leave the model unusable, before any work is done."""
        lo, hi = self.limits
        if not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise PlanError(f"{self.name}={value!r} is outside [{lo}, {hi}]")

    def apply(self, model: nn.Module, value: Any, ctx: ApplyContext) -> nn.Module:
        raise NotImplementedError


KNOBS: dict[str, Knob] = {}


def register_knob(cls: type[Knob]) -> type[Knob]:
    """Class decorator: make the knob searchable under ``cls.name``."""
    if not cls.name or cls.name in KNOBS:
        raise ValueError(f"knob name {cls.name!r} is empty or already registered.")
    KNOBS[cls.name] = cls()
    return cls


def ordered_knobs() -> list[Knob]:
    return sorted(KNOBS.values(), key=lambda k: k.order)
