"""The knob contract and registry.

A knob is one compression technique. Its setting is data: a frozen, versioned config (a
:class:`KnobConfig` subclass holding the searched ``value`` and the knob's non-searched
options), registered with the code that applies it, the way torchao's
``quantize_(model, config)`` dispatches on the config's type (:func:`apply_config`).

Who calls what: ``suggest_plan`` asks every registered knob for its value (``Knob.suggest``,
through its Optuna distribution); ``apply_plan`` applies the knobs whose value is not off, in
ascending ``order``, each through ``Knob.apply`` on a model that the caller already copied (the
teacher is never touched). A knob owns nothing between calls. What it did is part of what it
returns (:class:`Applied`: the model, the :class:`Facts` it changed, the layers it skipped);
the next knob reads the facts so far from ``ctx.facts`` and never writes them.

A value is one number for the whole network, or, for a knob with ``per_layer``, a mapping from
layer group (a module name, which covers the modules under it; ``*`` for the rest) to number.

Per-layer search (``--granularity allocated`` and ``layer``) asks a per-layer knob five more
things, all on the knob (see "per-layer search" in :class:`Knob`): its layer groups in a model
(``layer_groups``), how to change a few groups of a model at given values (``probe_``; the
sensitivity pass measures each group alone at ``sensitivity_values``), whether a larger value
compresses more (``compresses_upward``: then a budget is a floor), the budgets an allocated
study searches and the grid a group's value is chosen from (``budget_choices``, ``layer_grid``),
and a ``title`` for the tables. A knob that says ``per_layer`` without ``layer_groups`` is
refused at those granularities (``allocatable``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import optuna
import torch
from torch import nn

from tradeoff.spaces.runtimes import PYTORCH_RUNTIME
from tradeoff.storage.errors import TradeoffError


class SpaceError(TradeoffError, ValueError):
    """A search space that cannot be searched (bounds out of range, unknown knob); one line."""


class PlanError(TradeoffError, RuntimeError):
    """A plan that cannot be applied to this model; the trial fails with this reason."""


@dataclass(frozen=True)
class KnobConfig:
    """A knob's setting. ``value`` is the searched number (or a per-layer mapping); subclasses
    add their non-searched options as fields with defaults and check them in
    ``__post_init__`` (raising PlanError). ``VERSION`` is bumped when a config's meaning
    changes, so an exported plan says which one it was made with."""

    value: Any
    VERSION: ClassVar[int] = 1

    def options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "value"}


@dataclass(frozen=True)
class Facts:
    """What the knobs applied so far made of the model, for the knobs after them, for
    fine-tuning and for measurement: ``from_scratch`` (weights re-initialised: distil at
    length), ``sparse`` (weights hold zeros that a sparse encoding drops), ``weight_bits`` (how
    the weights are stored; of mixed precision, the widest of the quantized layers' bits) and
    ``layer_bits`` (mixed precision: {conv/linear module of the float model: bits}, 32 = float;
    None when every layer has ``weight_bits``) and ``dropped_blocks`` (the residual blocks replaced
    by the identity)."""

    from_scratch: bool = False
    sparse: bool = False
    weight_bits: int = 32
    layer_bits: Mapping[str, int] | None = None
    dropped_blocks: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Applied:
    """What ``Knob.apply`` returns: the changed model, the facts it changed (names of
    :class:`Facts` fields) and ``knob: layer: reason`` for every layer it could not handle."""

    model: nn.Module
    facts: Mapping[str, Any] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class ApplyContext:
    """What a knob may use while it changes a model; nothing in it is written by knobs.

    ``finetune(model, from_scratch)`` trains a changed model against the teacher (None: no
    training); ``calibration`` is a few batches of training inputs for quantization; ``runtime``
    the runtime the model is deployed in (``spaces.runtimes``: quantization uses its tool), and
    ``int8_form`` which int8 form to make there (``auto``: the faster; ``kernels`` or
    ``weights``: the one a measured trial used); ``before_finetune`` and ``post_training``: see
    :func:`~tradeoff.spaces.apply_plan`; ``facts`` what the knobs before this one did (set by
    ``apply_plan``)."""

    example_input: torch.Tensor
    num_classes: int
    finetune: Callable[[nn.Module, bool], nn.Module] | None = None
    calibration: Sequence[torch.Tensor] = ()
    runtime: str = PYTORCH_RUNTIME
    int8_form: str = "auto"
    before_finetune: Callable[[Callable[[], Any]], None] | None = None
    post_training: bool = True
    facts: Facts = Facts()


def macs_per_output(m: nn.Conv2d | nn.Linear) -> int:
    """Multiply-accumulates per output element of a conv or linear layer."""
    if isinstance(m, nn.Conv2d):
        return (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
    return m.in_features


def each_layer_call(
    model: nn.Module,
    example_input: torch.Tensor,
    record: Callable[[str, nn.Module, torch.Tensor, torch.Tensor], None],
) -> None:
    """One forward pass of ``example_input`` through ``model`` in eval mode, calling
    ``record(name, layer, input, output)`` at every conv and linear layer call (the MAC and
    traffic counts of the sensitivity table and the energy estimate are read this way)."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [
        m.register_forward_hook(lambda mod, inputs, out, name=n: record(name, mod, inputs[0], out))
        for n, m in layers
    ]
    try:
        model.eval()(example_input)
    finally:
        for h in handles:
            h.remove()


def skip_note(knob: str, layer: str, reason: str) -> str:
    return f"{knob}: {layer}: {reason}"


def value_for(value: Any, layer: str, default: Any) -> Any:
    """The value for module ``layer``: ``value`` itself when it is one number; from a per-layer
    mapping, the entry of the longest group that is ``layer`` or a module above it, else ``*``,
    else ``default``."""
    if not isinstance(value, Mapping):
        return value
    best, best_len = value.get("*", default), -1
    for group, v in value.items():
        if group != "*" and (layer == group or layer.startswith(group + ".")) and len(group) > best_len:
            best, best_len = v, len(group)
    return best


def unknown_groups(knob: str, value: Any, model: nn.Module) -> None:
    """PlanError when a per-layer ``value`` names a layer group that is no module of ``model``
    (nor a module above one): a typo would otherwise silently leave that layer alone. A group
    inside a module that is now ``nn.Identity`` (a dropped block) went with it: not an error."""
    if not isinstance(value, Mapping):
        return
    modules = dict(model.named_modules())
    names = [n for n in modules if n]
    for group in value:
        if group == "*" or any(n == group or n.startswith(group + ".") for n in names):
            continue
        parts = group.split(".")
        above = (modules.get(".".join(parts[:i])) for i in range(len(parts) - 1, 0, -1))
        if any(isinstance(m, nn.Identity) for m in above if m is not None):
            continue  # inside a block a knob before this one replaced by the identity (block_drop)
        close = sorted({n.split(".")[0] for n in names})[:8]
        raise PlanError(
            f"{knob}: this model has no layer {group!r} (its top-level modules: {', '.join(close)}); "
            "give module names as `tradeoff sensitivity` lists them"
        )


@dataclass(frozen=True)
class LayerGroup:
    """One unit of per-layer search: ``name`` is its key in a per-layer value (a module name),
    ``layers`` the conv/linear (or other) modules it changes, ``params`` the parameters it weighs
    in a budget (the allocation's budgets are parameter-weighted means)."""

    name: str
    layers: tuple[str, ...]
    params: int


@dataclass(frozen=True, eq=False)
class ProbeContext:
    """What a sensitivity probe may use: an example input, the class count, and ``cache``, a
    dict the knob keeps between the probes of one table (the SVDs of the layers, say): the
    groups are probed on the teacher, then combined on copies of it."""

    example_input: torch.Tensor
    num_classes: int
    cache: dict = field(default_factory=dict)


class Unmeasured(PlanError):
    """Raised by ``Knob.probed`` for a setting that does not change this group (a rank that
    would save nothing, say): the next setting is tried; the message is the reason listed when
    no setting of the group could be measured."""


@dataclass(frozen=True)
class Option:
    """A non-searched knob option the command line sets (``flag``), stored with the study."""

    flag: str
    choices: tuple[Any, ...]
    help: str


class Knob:
    """Base class of a knob. Subclasses set the class attributes, name their ``config`` type and
    implement ``apply``; ``finalize_`` runs after fine-tuning, before the post-training knobs."""

    name: ClassVar[str] = ""
    config: ClassVar[type[KnobConfig]] = KnobConfig
    off: ClassVar[Any] = None  # the value that leaves the model unchanged
    order: ClassVar[int] = 0  # application order within a plan
    structural: ClassVar[bool] = False  # changes the architecture: the model is fine-tuned afterwards
    limits: ClassVar[tuple[float, float]] = (0.0, 1.0)  # hard bounds of any user space
    default_space: ClassVar[dict[str, Any]] = {}
    searched_by_default: ClassVar[bool] = True  # False: in a study's space only where the user names it
    # False: an allocated or layer study sets it layer by layer only where --allocate names it
    allocated_by_default: ClassVar[bool] = True
    probe_value: ClassVar[Any] = None  # the value tried alone when a study is seeded
    per_layer: ClassVar[bool] = False  # accepts a mapping from layer group to value
    options: ClassVar[dict[str, Option]] = {}  # the config's options that the CLI sets
    help: ClassVar[str] = ""

    # -- the space ------------------------------------------------------------------------

    def validate(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Check one space entry (``{"low", "high", "step"}`` or ``{"choices"}``) and return it
        normalised; raise SpaceError naming the knob otherwise."""
        lo, hi = self.limits
        if "choices" in spec:
            choices = list(spec["choices"])
            if not choices:
                raise SpaceError(f"`{self.name}` needs at least one choice.")
            for c in choices:
                if not _number(c) or not lo <= c <= hi:
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
            if not math.isfinite(step) or step <= 0:
                raise SpaceError(f"`{self.name}` step must be a finite number > 0.")
            if high > low and abs(round((high - low) / step) * step - (high - low)) > 1e-9:
                # Optuna would silently shrink the upper bound; say so instead.
                raise SpaceError(f"`{self.name}` range [{low}, {high}] is not a multiple of step {step}.")
        return {"low": low, "high": high, "step": step}

    def distribution(self, spec: Mapping[str, Any]) -> optuna.distributions.BaseDistribution:
        if "choices" in spec:
            return optuna.distributions.CategoricalDistribution(list(spec["choices"]))
        return optuna.distributions.FloatDistribution(spec["low"], spec["high"], step=spec.get("step"))

    def suggest(self, trial: optuna.Trial, spec: Mapping[str, Any]) -> Any:
        if "choices" in spec:
            return trial.suggest_categorical(self.name, spec["choices"])
        return trial.suggest_float(self.name, spec["low"], spec["high"], step=spec.get("step"))

    def probe(self, spec: Mapping[str, Any]) -> Any | None:
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

    # -- the config -----------------------------------------------------------------------

    def make(self, value: Any, options: Mapping[str, Any] | None = None) -> KnobConfig:
        """The config for ``value`` with ``options``; PlanError names an unknown option."""
        options = dict(options or {})
        known = {f.name for f in dataclasses.fields(self.config)} - {"value"}
        unknown = set(options) - known
        if unknown:
            raise PlanError(f"{self.name}: unknown option(s) {sorted(unknown)}; known: {sorted(known)}")
        return self.config(value=value, **options)

    def can_switch_on(self, spec: Mapping[str, Any]) -> bool:
        """Whether the (validated) space entry ``spec`` holds any value but the off value."""
        if "choices" in spec:
            return any(c != self.off for c in spec["choices"])
        return not spec["low"] == spec["high"] == self.off

    def value_text(self, value: Any, facts: Facts | Mapping[str, Any] | None = None) -> str | None:
        """The value in words where the generic form would say too little (the blocks a depth
        value dropped, by name, from the ``facts`` of the model it made); None: the generic form."""
        return None

    def is_off(self, value: Any) -> bool:
        if isinstance(value, Mapping):
            return all(v == self.off for v in value.values())
        return value == self.off

    def check_value(self, value: Any) -> None:
        """Reject a number that would leave the model unusable, before any work is done."""
        lo, hi = self.limits
        if not _number(value) or not lo <= value <= hi:
            raise PlanError(f"{self.name}={value!r} is outside [{lo}, {hi}]")

    def check(self, config: KnobConfig) -> None:
        """Every value of ``config`` (each layer's, for a mapping) within limits."""
        value = config.value
        if isinstance(value, Mapping):
            if not self.per_layer:
                raise PlanError(f"{self.name} takes one value for the whole network, not a per-layer mapping")
            if not value:
                raise PlanError(f"{self.name}: an empty per-layer mapping")
            for group, v in value.items():
                if not isinstance(group, str) or not group:
                    raise PlanError(f"{self.name}: layer group {group!r} is not a module name")
                self.check_value(v)
            return
        self.check_value(value)

    # -- the transform --------------------------------------------------------------------

    def apply(self, model: nn.Module, config: KnobConfig, ctx: ApplyContext) -> Applied:
        """Change ``model`` (a copy the caller owns) as ``config`` says; never called with the
        off value."""
        raise NotImplementedError

    def finalize_(self, model: nn.Module) -> nn.Module:
        """Make this knob's change permanent after fine-tuning (default: nothing to do)."""
        return model

    # -- per-layer search (--granularity allocated and layer) ---------------------------------

    title: ClassVar[str] = ""  # what a column of the sensitivity table is: "pruned at ratio"
    compresses_upward: ClassVar[bool] = False  # a larger value compresses more: a budget is a floor
    sensitivity_points: ClassVar[tuple[float, ...]] = ()  # the settings each group is measured at

    @classmethod
    def allocatable(cls) -> bool:
        """Whether allocated and per-layer studies can search this knob layer by layer: it takes
        per-layer values and lists its groups."""
        return cls.per_layer and cls.layer_groups is not Knob.layer_groups

    def layer_groups(self, model: nn.Module, ctx: ProbeContext) -> tuple[list[LayerGroup], list[str]]:
        """The groups of ``model`` a per-layer value of this knob sets one by one, and a
        ``knob: layer: reason`` note for every layer it cannot change. Implement it (with
        ``probe_``) to make a per-layer knob allocatable."""
        raise NotImplementedError

    def probe_(self, model: nn.Module, values: Mapping[str, float], ctx: ProbeContext) -> nn.Module:
        """``model`` (a copy the caller owns) with each named group changed to its value, a
        value the sensitivity table measured; the sensitivity pass combines several groups of
        several knobs this way to check which of its effect metrics predicts better."""
        raise NotImplementedError

    @contextlib.contextmanager
    def probed(
        self, model: nn.Module, group: LayerGroup, value: float, ctx: ProbeContext
    ) -> Iterator[tuple[nn.Module, float]]:
        """``model`` with ``group`` alone at ``value`` (a setting of ``sensitivity_values``)
        while the block runs, and the value the group really took (what the table records: a
        rank rounded to a multiple of 8, say); ``model`` itself is unchanged afterwards. Raise
        :class:`Unmeasured` for a setting that changes nothing. The default works on a copy;
        a knob that can change a group and undo it in place overrides this for speed."""
        yield self.probe_(copy.deepcopy(model), {group.name: value}, ctx), value

    def sensitivity_values(self, spec: Mapping[str, Any] | None) -> list[float]:
        """The settings the sensitivity pass measures each group at, for the space entry
        ``spec`` (default: ``sensitivity_points``)."""
        return [float(v) for v in self.sensitivity_points]

    def combination_size(self, rng: random.Random, groups: int) -> int:
        """How many of ``groups`` one random combination of the sensitivity check changes
        (default: up to half)."""
        return round(rng.uniform(0, 0.5) * groups)

    def budget_choices(self, spec: Mapping[str, Any]) -> list[Any] | None:
        """The budgets an allocated study searches for this knob, when they differ from the
        space's own values (average bits between two widths, say); None: the space's."""
        return None

    def layer_grid(self, spec: Mapping[str, Any], step: float) -> list[float]:
        """The values one group may take in an allocation: the space's choices, or its range on
        its step (``step`` where it has none); the off value is always one."""
        if "choices" in spec:
            values = [float(c) for c in spec["choices"]]
        else:
            low, high = spec["low"], spec["high"]
            step = spec.get("step") or step
            n = int(round((high - low) / step))
            values = [round(low + i * step, 10) for i in range(n + 1)]
        return sorted({*values, float(self.off)})

    def unmeasured_value(self, budget: float, grid: Sequence[float]) -> Any:
        """The value an allocation gives the layers the table has no row for (``*``)."""
        return float(self.off)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


KNOBS: dict[str, Knob] = {}
_BY_CONFIG: dict[type[KnobConfig], Knob] = {}


def register_knob(cls: type[Knob]) -> type[Knob]:
    """Class decorator: make the knob searchable under ``cls.name`` and its ``config`` type
    applicable through :func:`apply_config`."""
    if not cls.name or cls.name in KNOBS:
        raise ValueError(f"knob name {cls.name!r} is empty or already registered.")
    if not (dataclasses.is_dataclass(cls.config) and issubclass(cls.config, KnobConfig)):
        raise ValueError(f"knob {cls.name!r}: `config` must be a KnobConfig dataclass.")
    if cls.config is KnobConfig or cls.config in _BY_CONFIG:
        raise ValueError(f"knob {cls.name!r}: `config` must be a config type of its own.")
    knob = cls()
    KNOBS[cls.name] = knob
    _BY_CONFIG[cls.config] = knob
    return cls


def knob_for(config: KnobConfig) -> Knob:
    try:
        return _BY_CONFIG[type(config)]
    except KeyError:
        raise PlanError(f"no knob is registered for {type(config).__name__}") from None


def apply_config(model: nn.Module, config: KnobConfig, ctx: ApplyContext) -> Applied:
    """Apply one knob's config to ``model`` (changed in place or replaced; see ``Applied``).
    The off value is a no-op: ``Knob.apply`` is never called with it."""
    knob = knob_for(config)
    if knob.is_off(config.value):
        return Applied(model)
    knob.check(config)
    return knob.apply(model, config, ctx)


def ordered_knobs() -> list[Knob]:
    return sorted(KNOBS.values(), key=lambda k: (k.order, k.name))


def allocatable_knobs() -> list[Knob]:
    """The knobs per-layer search sets layer by layer, in application order."""
    return [k for k in ordered_knobs() if k.allocatable()]
