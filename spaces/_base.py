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
    """What a knob may use while it changes a model, and what it reports back.

    Given by the caller: ``finetune(model, from_scratch)`` trains a changed model against the
    teacher (None: no training); ``calibration`` is a few batches of training inputs for
    quantization; ``options`` holds search settings that are not searched (``prune_mode``).
    Reported by knobs: ``skipped`` collects ``"knob: layer: reason"`` for every layer a knob
    could not handle; ``from_scratch`` says the weights were re-initialised (a student), so the
    model needs distillation rather than a short fine-tune; ``sparse`` that weights hold zeros
    that a sparse encoding would drop; ``timings`` where ``apply_plan`` spent its time.
    """

    example_input: torch.Tensor
    num_classes: int
    finetune: Callable[[nn.Module, bool], nn.Module] | None = None
    calibration: list[torch.Tensor] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    from_scratch: bool = False
    sparse: bool = False
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step of apply_plan

    def skip(self, knob: str, layer: str, reason: str) -> None:
        self.skipped.append(f"{knob}: {layer}: {reason}")


class Knob:
    """Base class of a knob. Subclasses set the class attributes and implement ``apply``."""

    name: str = ""
    off: Any = None  # the value that leaves the model unchanged
    order: int = 0  # application order within a plan
    structural: bool = False  # changes the architecture: the model is fine-tuned afterwards
    limits: tuple[float, float] = (0.0, 1.0)  # hard bounds of any user space
    default_space: dict[str, Any] = {}
    probe_value: Any = None  # the value tried alone when a study is seeded
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

    def probe(self, spec: dict[str, Any]) -> Any | None:
        """The value this knob alone is tried at when a study is seeded: ``probe_value`` brought
        into the user's range (None when the range leaves the knob nothing to try)."""
        if "choices" in spec:
            on = [c for c in spec["choices"] if c != self.off]
            return self.probe_value if self.probe_value in on else (on[0] if on else None)
        low, high, step = spec["low"], spec["high"], spec.get("step")
        if low == high:
            return None
        value = min(max(self.probe_value, low), high)
        if step:
            value = low + round((value - low) / step) * step
        value = round(value, 10)
        return None if value == self.off else value


KNOBS: dict[str, Knob] = {}


def register_knob(cls: type[Knob]) -> type[Knob]:
    """Class decorator: make the knob searchable under ``cls.name``."""
    if not cls.name or cls.name in KNOBS:
        raise ValueError(f"knob name {cls.name!r} is empty or already registered.")
    KNOBS[cls.name] = cls()
    return cls


def ordered_knobs() -> list[Knob]:
    return sorted(KNOBS.values(), key=lambda k: k.order)
