"""Plan: one value per knob; the only way the runner and export touch knobs."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from torch import nn

import spaces.distillation  # noqa: F401 - each import registers its knob
import spaces.low_rank  # noqa: F401
import spaces.pruning  # noqa: F401
import spaces.quantization  # noqa: F401
from spaces._base import KNOBS, ApplyContext, PlanError, SpaceError, ordered_knobs
from spaces.pruning import make_permanent_

PLAN_VERSION = 1


@dataclass(frozen=True)
class Plan:
    """A compression plan. Every field is a knob's value; the defaults are the uncompressed
    baseline. ``version`` lets a plan exported by an older tradeoff still load."""

    student_width: float = 1.0
    prune_ratio: float = 0.0
    rank_ratio: float = 1.0
    weight_bits: int = 32
    version: int = PLAN_VERSION

    def __post_init__(self) -> None:
        # Optuna's stepped floats carry binary noise (0.6000000000000001): keep plans readable
        # and equal to what a user types; 10 decimals change no layer's channel count.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float):
                object.__setattr__(self, f.name, round(value, 10))

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
        if "weight_bits" in values:
            values["weight_bits"] = int(values["weight_bits"])
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


@dataclass(frozen=True, eq=False)
class Compressed:
    """What ``apply_plan`` made: the deployable model, the same network before quantization
    (for FLOP counts), its weight bit-width, whether its weights are sparse, and the layers that
    knobs skipped."""

    model: nn.Module
    float_model: nn.Module
    weight_bits: int
    sparse: bool
    skipped: tuple[str, ...]


def probe_plans(space: Mapping[str, Mapping[str, Any]]) -> list[Plan]:
    """One single-technique plan per searched knob, so the front always shows what each
    technique achieves alone."""
    plans = []
    for knob in ordered_knobs():
        value = knob.probe(space[knob.name]) if knob.name in space else None
        if value is not None:
            plans.append(Plan(**{knob.name: value}))
    return plans


def space_filling_plans(space: Mapping[str, Mapping[str, Any]], n: int, *, seed: int = 0) -> list[Plan]:
    """``n`` plans spread over ``space`` by a Latin hypercube (scipy's), each value snapped to its
    knob's step or choices: an informed first generation for NSGA-II instead of random draws."""
    knobs = [k for k in ordered_knobs() if k.name in space]
    if n <= 0 or not knobs:
        return []
    from scipy.stats import qmc

    plans: list[Plan] = []
    for row in qmc.LatinHypercube(d=len(knobs), seed=seed).random(n):
        values: dict[str, Any] = {}
        for knob, u in zip(knobs, row):
            spec = space[knob.name]
            if "choices" in spec:
                choices = list(spec["choices"])
                values[knob.name] = choices[min(int(u * len(choices)), len(choices) - 1)]
                continue
            low, high, step = spec["low"], spec["high"], spec.get("step")
            value = low + u * (high - low)
            if step:
                value = low + round((value - low) / step) * step
            values[knob.name] = round(min(max(value, low), high), 10)
        plan = Plan(**values)
        if plan not in plans:
            plans.append(plan)
    return plans


def apply_plan(teacher: nn.Module, plan: Plan, ctx: ApplyContext) -> Compressed:
    """A compressed copy of ``teacher``, in a fixed order: student -> prune -> low-rank ->
    distillation / fine-tune against the teacher (when any of those changed the model) ->
    quantize. ``teacher`` itself is never changed. Values outside a knob's limits are rejected
    before any work."""
    active = plan.active()
    for name, value in active.items():
        KNOBS[name].check(value)
    t = time.perf_counter()
    model = copy.deepcopy(teacher)
    ctx.timings["teacher_copy_s"] = time.perf_counter() - t
    structural = [k for k in ordered_knobs() if k.name in active and k.structural]
    for knob in structural:
        t = time.perf_counter()
        model = knob.apply(model, active[knob.name], ctx)
        ctx.timings[f"{knob.name}_s"] = time.perf_counter() - t
    if structural and ctx.finetune is not None:
        t = time.perf_counter()
        model = ctx.finetune(model, ctx.from_scratch)
        ctx.timings["finetune_s"] = time.perf_counter() - t
    float_model = make_permanent_(model).eval()
    model = float_model
    for knob in ordered_knobs():
        if knob.name in active and not knob.structural:
            t = time.perf_counter()
            model = knob.apply(model, active[knob.name], ctx)
            ctx.timings[f"{knob.name}_s"] = time.perf_counter() - t
    return Compressed(
        model=model.eval(),
        float_model=float_model,
        weight_bits=int(plan.weight_bits),
        sparse=ctx.sparse,
        skipped=tuple(ctx.skipped),
    )
