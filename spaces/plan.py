"""Plan: one config per registered knob; the only way the runner and export touch knobs.

``Plan`` is built from the knob registry, not written out by hand: a new knob module adds a
plan field. Its stored form (``to_dict``) is ``{knob: value, ..., "version": N}`` plus
``"options"`` where a knob's options differ from their defaults; a per-layer value is a
``{layer group: number}`` mapping. Optuna params are flat: a per-layer value travels as
``knob[group]`` entries.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from torch import nn

import tradeoff.spaces.depth  # noqa: F401 - each import registers its knob
import tradeoff.spaces.distillation  # noqa: F401
import tradeoff.spaces.low_rank  # noqa: F401
import tradeoff.spaces.pruning  # noqa: F401
import tradeoff.spaces.quantization  # noqa: F401
from tradeoff.spaces._base import (
    KNOBS,
    ApplyContext,
    Facts,
    Knob,
    KnobConfig,
    PlanError,
    SpaceError,
    ordered_knobs,
)

# 1: the four built-in knobs, one number each. 2: "options" and per-layer mappings.
PLAN_VERSION = 2


def _tidy(value: Any) -> Any:
    """Optuna's stepped floats carry binary noise (0.6000000000000001): keep plans readable and
    equal to what a user types; 10 decimals change no layer's channel count."""
    if isinstance(value, Mapping):
        return {str(k): _tidy(v) for k, v in sorted(value.items())}
    if isinstance(value, float):
        return round(value, 10)
    return value


class Plan:
    """A compression plan: one :class:`KnobConfig` per registered knob; the defaults are the
    uncompressed baseline. ``Plan(prune_ratio=0.5, options={"prune_ratio": {"mode": ...}})``;
    ``plan.prune_ratio`` is that knob's value, ``plan.config("prune_ratio")`` its config."""

    __slots__ = ("_configs",)

    def __init__(self, *, options: Mapping[str, Mapping[str, Any]] | None = None, **values: Any) -> None:
        unknown = (set(values) | set(options or {})) - set(KNOBS)
        if unknown:
            raise PlanError(f"unknown plan field(s) {sorted(unknown)}; knobs: {sorted(KNOBS)}")
        options = options or {}
        configs = {
            k.name: k.make(_tidy(values.get(k.name, k.off)), options.get(k.name)) for k in ordered_knobs()
        }
        object.__setattr__(self, "_configs", configs)

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __getattr__(self, name: str) -> Any:
        configs = object.__getattribute__(self, "_configs")
        if name in configs:
            return configs[name].value
        raise AttributeError(name)

    def config(self, name: str) -> KnobConfig:
        return self._configs[name]

    def configs(self) -> list[tuple[Knob, KnobConfig]]:
        """(knob, its config) for every knob, in application order."""
        return [(k, self._configs[k.name]) for k in ordered_knobs()]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plan) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __repr__(self) -> str:
        return f"Plan({format_plan(self)})"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: _plain(c.value) for name, c in self._configs.items()}
        options = {name: c.options() for name, c in self._configs.items() if c.options() != _defaults(c)}
        if options:
            out["options"] = options
        out["version"] = PLAN_VERSION
        return out

    def params(self) -> dict[str, Any]:
        """The knob values alone, as Optuna params (for ``enqueue_trial``): a per-layer value as
        one ``knob[group]`` entry per group."""
        out: dict[str, Any] = {}
        for name, c in self._configs.items():
            if isinstance(c.value, Mapping):
                out.update({f"{name}[{group}]": v for group, v in c.value.items()})
            else:
                out[name] = c.value
        return out

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], *, options: Mapping[str, Mapping[str, Any]] | None = None
    ) -> Plan:
        """Rebuild a plan from a trial's params or a ``to_dict()`` (of this or an older
        version); knobs that are absent keep their off value, so plans from a narrower space or
        an older version still load. ``options`` (the study's) apply where the plan has none."""
        params = dict(params)
        version = int(params.pop("version", PLAN_VERSION))
        if version > PLAN_VERSION:
            raise PlanError(
                f"plan version {version} is newer than this tradeoff understands ({PLAN_VERSION}); "
                "upgrade tradeoff"
            )
        merged = {k: dict(v) for k, v in (options or {}).items()}
        for name, opts in (params.pop("options", None) or {}).items():
            merged.setdefault(name, {}).update(opts)
        values: dict[str, Any] = {}
        for key, value in params.items():
            name, _, group = key.partition("[")
            if group:
                values.setdefault(name, {})[group.rstrip("]")] = value
            else:
                values[name] = value
        for name, value in values.items():
            if name in KNOBS and isinstance(KNOBS[name].off, int) and not isinstance(value, Mapping):
                values[name] = int(value)  # Optuna may hand back 8.0 for a choice of 8
        return cls(options=merged, **values)

    @property
    def is_baseline(self) -> bool:
        return all(k.is_off(c.value) for k, c in self.configs())

    def active(self) -> dict[str, Any]:
        """The knobs this plan switches on, with their values."""
        return {k.name: c.value for k, c in self.configs() if not k.is_off(c.value)}


def _plain(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


def _defaults(config: KnobConfig) -> dict[str, Any]:
    return {
        f.name: f.default
        for f in dataclasses.fields(config)
        if f.name != "value" and f.default is not dataclasses.MISSING
    }


def format_plan(plan: Plan | Mapping[str, Any], facts: Mapping[str, Any] | Facts | None = None) -> str:
    """One line for people: the knobs a plan switches on (``prune_ratio=0.5, weight_bits=8``),
    a per-layer value summarised (``weight_bits=8x3 4x14 32x2, prune_ratio=0.1-0.6 over 12
    groups``; the full map is in ``to_dict()``), options that differ from their defaults in
    brackets; ``baseline (no compression)`` when nothing is on. Takes a Plan or its stored
    form; a stored plan naming a knob this process does not know is shown as stored. ``facts``
    (the built model's, as a trial stores them): what the knobs did, where a knob says it in
    words (``block_drop=0.4 (layer3.1, layer4.1)``)."""
    if not isinstance(plan, Plan):
        try:
            plan = Plan.from_params(plan)
        except (PlanError, TypeError, ValueError):
            shown = {k: v for k, v in plan.items() if k not in ("version", "options")}
            return ", ".join(f"{k}={_value_text(v)}" for k, v in shown.items())
    parts = []
    for knob, config in plan.configs():
        if knob.is_off(config.value):
            continue
        words = knob.value_text(config.value, facts)
        text = f"{knob.name}={words if words is not None else _value_text(config.value, knob.name)}"
        options = {k: v for k, v in config.options().items() if _defaults(config).get(k) != v}
        if options:
            text += " (" + ", ".join(f"{k}={v}" for k, v in options.items()) + ")"
        parts.append(text)
    return ", ".join(parts) or "baseline (no compression)"


def _value_text(value: Any, knob: str = "") -> str:
    if isinstance(value, Mapping):
        if len(value) > 3 and knob in KNOBS:
            from tradeoff.spaces.allocation import summary

            return summary(knob, value)
        return "{" + ", ".join(f"{g}: {_value_text(v)}" for g, v in value.items()) + "}"
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def default_space() -> dict[str, dict[str, Any]]:
    """The space a study searches when the user narrows nothing: every knob searched by default
    at its default bounds."""
    return {k.name: dict(k.default_space) for k in ordered_knobs() if k.searched_by_default}


def validate_space(space: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """A complete, checked space: every knob searched by default at its bounds, the user's where
    given; a knob not searched by default (``block_drop``) only where the user names it."""
    space = dict(space or {})
    unknown = set(space) - set(KNOBS)
    if unknown:
        raise SpaceError(f"unknown knob(s) {sorted(unknown)}; known: {sorted(KNOBS)}")
    return {
        k.name: k.validate(dict(space.get(k.name, k.default_space)))
        for k in ordered_knobs()
        if k.searched_by_default or k.name in space
    }


def validate_options(options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """The knobs' non-searched options, checked by building each knob's config; only the
    options that differ from their defaults are kept."""
    out = {}
    for name, opts in (options or {}).items():
        if name not in KNOBS:
            raise SpaceError(f"options for unknown knob {name!r}; known: {sorted(KNOBS)}")
        knob = KNOBS[name]
        try:
            config = knob.make(knob.off, opts)
        except (PlanError, TypeError) as e:
            raise SpaceError(str(e)) from None
        changed = {k: v for k, v in config.options().items() if _defaults(config).get(k) != v}
        if changed:
            out[name] = changed
    return out


def suggest_plan(
    trial: optuna.Trial,
    space: Mapping[str, Mapping[str, Any]],
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Plan:
    """Ask the trial for one value per knob in ``space``; ``options`` are the study's."""
    values = {k.name: k.suggest(trial, space[k.name]) for k in ordered_knobs() if k.name in space}
    return Plan(options=options, **values)


@dataclass(frozen=True, eq=False)
class Compressed:
    """What ``apply_plan`` made: the deployable model, the same network before the post-training
    knobs (for FLOP counts), what the knobs made of it (:class:`Facts`: weight bit-width,
    sparsity), the layers that knobs skipped, and the seconds each step took."""

    model: nn.Module
    float_model: nn.Module
    facts: Facts
    skipped: tuple[str, ...]
    timings: dict[str, float]

    @property
    def weight_bits(self) -> int:
        return self.facts.weight_bits

    @property
    def sparse(self) -> bool:
        return self.facts.sparse


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
    """``n`` plans spread over ``space`` by a Latin hypercube (scipy's, its points moved to lower
    centred discrepancy: ``optimization="random-cd"``), each value snapped to its knob's step or
    choices: a start design that covers the space better than random draws."""
    knobs = [k for k in ordered_knobs() if k.name in space]
    if n <= 0 or not knobs:
        return []
    from scipy.stats import qmc

    plans: list[Plan] = []
    for row in qmc.LatinHypercube(d=len(knobs), optimization="random-cd", seed=seed).random(n):
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


def structure_key(plan: Plan) -> str:
    """A key for the network a plan trains: the structural knobs' configs (values, options and
    config versions), not the post-training ones. Plans that differ only in post-training knobs
    (bit-width) share a key, and so a fine-tuned float model."""
    parts = {
        knob.name: {"value": _plain(config.value), "options": config.options(), "version": config.VERSION}
        for knob, config in plan.configs()
        if knob.structural
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def post_training_siblings(plan: Plan, space: Mapping[str, Mapping[str, Any]], limit: int = 8) -> list[Plan]:
    """The plans that share ``plan``'s structure and differ only in the post-training knobs
    whose space is a list of choices (bit-width): calibrated and quantized from the same
    fine-tuned float model, each costs a quantization and a measurement, not a fine-tune.
    At most ``limit``, in the order of the choices."""
    knobs = [k for k in ordered_knobs() if not k.structural and "choices" in space.get(k.name, {})]
    base = plan.to_dict()
    out: list[Plan] = []
    for values in itertools.product(*(space[k.name]["choices"] for k in knobs)):
        changed = dict(base, **{k.name: v for k, v in zip(knobs, values)})
        sibling = Plan.from_params(changed)
        if sibling != plan and sibling not in out:
            out.append(sibling)
        if len(out) >= limit:
            break
    return out


def apply_plan(teacher: nn.Module, plan: Plan, ctx: ApplyContext) -> Compressed:
    """A compressed copy of ``teacher``: the structural knobs in ``order`` (student -> prune ->
    low-rank), then distillation / fine-tuning against the teacher (when any of them changed
    the model), then each structural knob's ``finalize_``, then the post-training knobs
    (quantization). ``teacher`` itself is never changed. Values outside a knob's limits are
    rejected before any work.

    ``ctx.before_finetune``, when set, is called once before fine-tuning with a function that
    makes the deployable model of the plan as the network stands (a copy; untrained, or partly
    trained when called later): its size, MACs and latency are those of the trained model, so a
    caller can check constraints first and stop (by raising) before any training. Given a plan
    of the same structure, the function applies that plan's post-training knobs instead.
    ``ctx.post_training=False`` stops after ``finalize_``: the float model alone (a caller that
    holds the deployed form already)."""
    active = [(k, c) for k, c in plan.configs() if not k.is_off(c.value)]
    for knob, config in active:
        knob.check(config)
    timings: dict[str, float] = {}
    skipped: list[str] = []
    t = time.perf_counter()
    model = copy.deepcopy(teacher)
    timings["teacher_copy_s"] = time.perf_counter() - t

    def run(knob: Knob, config: KnobConfig, model: nn.Module, facts: Facts, notes: list[str]):
        t = time.perf_counter()
        applied = knob.apply(model, config, dataclasses.replace(ctx, facts=facts))
        timings[f"{knob.name}_s"] = time.perf_counter() - t
        notes.extend(applied.skipped)
        return applied.model, dataclasses.replace(facts, **applied.facts)

    structural = [(k, c) for k, c in active if k.structural]
    post = [(k, c) for k, c in active if not k.structural]
    facts = dataclasses.replace(ctx.facts)
    for knob, config in structural:
        model, facts = run(knob, config, model, facts, skipped)

    def finish(model: nn.Module, facts: Facts, notes: list[str], variant: Plan | None = None) -> Compressed:
        for knob, _ in structural:
            model = knob.finalize_(model)
        float_model = model.eval()
        if ctx.post_training:
            knobs = post if variant is None else [(k, c) for k, c in variant.configs() if not k.structural]
            for knob, config in knobs:
                if not knob.is_off(config.value):
                    model, facts = run(knob, config, model, facts, notes)
        return Compressed(
            model=model.eval(), float_model=float_model, facts=facts, skipped=tuple(notes), timings=timings
        )

    trains = bool(structural) and ctx.finetune is not None
    if trains and ctx.before_finetune is not None:
        ctx.before_finetune(lambda variant=None: finish(copy.deepcopy(model), facts, list(skipped), variant))
    if trains:
        t = time.perf_counter()
        model = ctx.finetune(model, facts.from_scratch)
        timings["finetune_s"] = time.perf_counter() - t
    return finish(model, facts, skipped)
