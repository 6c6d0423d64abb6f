"""Student width: a thinner copy of the teacher's architecture, trained by distillation.

The thin copy is made for any architecture the same way: torch-pruning's dependency graph
removes ``1 - width`` of every coupled channel group (rounded to multiples of 8), then every
weight is re-initialised, so the student inherits the teacher's shape, not its weights. The
runner then trains it with Hinton's soft-target loss against the teacher
(``search.task.training.kd_loss``), for ``student_steps`` rather than the short fine-tune.

Width per stage. The value is one width, or one per resolution stage (per-layer:
``{"14x14": 0.5, "7x7": 0.25}``, ``*`` for the rest), as EfficientNet's and RegNet's designs and
AutoSlim's search set width stage by stage. A stage is the set of coupled channel groups
(:func:`~tradeoff.spaces.pruning.channel_groups`) whose feature maps have one spatial size: a
group's size is the output size of the layers whose output channels it sets (weighted by their
parameters, where a group spans two, as a residual stem does); a group of linear layers belongs
to the stage of the convolution called before it. Stages are named by that size (``28x28``;
``linear`` for a network without convolutions) and listed in the order the forward pass reaches
them. Every weight is re-initialised whatever the stage's width: a student is trained from
scratch.

The sensitivity pass (``allocated``) measures each stage of the trained teacher thinned alone to
a few widths by the same surgery, the most important channels (L2 norm) kept and no weight
re-initialised: how much of a stage's function the narrower width can still carry, a proxy for
what a student trained at that width loses there (the one-shot estimate AutoSlim and NetAdapt
make of per-layer width), not a measurement of the student itself; the allocation's searched
sharpness decides how far a study trusts it.
"""

from __future__ import annotations

import contextlib
import copy
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from tradeoff.spaces._base import (
    Applied,
    ApplyContext,
    Knob,
    KnobConfig,
    LayerGroup,
    PlanError,
    ProbeContext,
    each_layer_call,
    register_knob,
    skip_note,
    value_for,
)
from tradeoff.spaces.pruning import channel_groups, check_channels_left, magnitude_probe_, prune_channels_


def reinitialise_(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()
        if hasattr(m, "reset_running_stats"):
            m.reset_running_stats()
    return model


@dataclass(frozen=True)
class Stage:
    """One resolution stage: its ``name`` (``28x28``), the ``roots`` of its channel groups (their
    keys in torch-pruning's per-layer ratios), the conv/linear ``layers`` whose channels they
    couple and the parameters of the layers whose output channels they set."""

    name: str
    roots: tuple[str, ...]
    layers: tuple[str, ...]
    params: int


def student_stages(model: nn.Module, example_input: torch.Tensor, num_classes: int) -> list[Stage]:
    """The resolution stages of ``model`` (see the module docstring), in forward order. Raises
    what torch-pruning raises where its graph cannot follow the model whole."""
    x = example_input[:1]
    groups = channel_groups(model, x, num_classes)
    size: dict[str, str] = {}
    order: list[str] = []

    def record(name, layer, inp, out):
        if name in size:
            return
        # a linear layer's output has no spatial size, also on a channels-last map (ConvNeXt's)
        spatial = () if isinstance(layer, nn.Linear) else tuple(out.shape[2:])
        before = size[order[-1]] if order else "linear"
        pooled = inp.dim() >= 3 and all(d == 1 for d in inp.shape[2:]) and before not in ("linear", "1x1")
        # a linear layer, or a convolution after a global pool (a squeeze-excitation's): the
        # stage of the layer before it
        size[name] = before if not spatial or pooled else "x".join(str(d) for d in spatial)
        order.append(name)

    was_training = model.training
    with torch.no_grad():
        each_layer_call(model, x, record)
    model.train(was_training)
    index = {n: i for i, n in enumerate(order)}
    params = {n: m.weight.numel() for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}

    def first(name: str) -> int:
        return min((index[n] for n in order if size[n] == name), default=len(order))

    def stage_of(group) -> str:
        weight: dict[str, int] = defaultdict(int)
        for layer in group.outputs or (group.root,):
            if layer in size:
                weight[size[layer]] += params.get(layer, 0)
        return max(weight, key=lambda s: (weight[s], -first(s))) if weight else "linear"

    members: dict[str, list] = defaultdict(list)
    for g in groups:
        members[stage_of(g)].append(g)

    def start(name: str) -> int:
        return min(index.get(layer, len(order)) for g in members[name] for layer in (g.root, *g.layers))

    stages = []
    for name in sorted(members, key=start):
        gs = members[name]
        layers = sorted({layer for g in gs for layer in g.layers}, key=lambda n: index.get(n, len(order)))
        outputs = {layer for g in gs for layer in (g.outputs or (g.root,))}
        stages.append(
            Stage(name, tuple(g.root for g in gs), tuple(layers), int(sum(params.get(n, 0) for n in outputs)))
        )
    return stages


def stage_ratios(stages: list[Stage], widths: Mapping[str, float], knob: str = "student_width") -> dict:
    """torch-pruning's per-layer ratios (``1 - width`` at each group root) for per-stage
    ``widths`` (``*``: the stages not named; unnamed and no ``*``: full width); PlanError names
    a stage this model does not have."""
    names = [s.name for s in stages]
    unknown = [k for k in widths if k != "*" and k not in names]
    if unknown:
        raise PlanError(
            f"{knob}: this model has no stage {unknown[0]!r} (its stages, by feature-map size: "
            f"{', '.join(names) or 'none'})"
        )
    ratios = {"*": 0.0}
    for stage in stages:
        width = float(value_for(widths, stage.name, 1.0))
        for root in stage.roots:
            ratios[root] = round(1.0 - width, 10)
    return ratios


def thin_copy_(
    model: nn.Module, width: float | Mapping[str, float], ctx: ApplyContext, skipped: list[str]
) -> nn.Module:
    """Shrink every prunable layer's channels to ``width`` (per stage: each stage's channel
    groups to its width) and re-initialise all weights."""
    ratio: float | dict[str, float]
    if isinstance(width, Mapping) and set(width) != {"*"}:
        try:
            stages = student_stages(model, ctx.example_input, ctx.num_classes)
        except PlanError:
            raise
        except Exception as e:  # noqa: BLE001 - torch-pruning raises bare errors for unsupported graphs
            raise PlanError(
                f"student_width per stage needs torch-pruning's graph of the whole model, which "
                f"failed ({type(e).__name__}); give one width for the whole network"
            ) from None
        ratio = stage_ratios(stages, width)
    else:
        ratio = 1.0 - float(width["*"] if isinstance(width, Mapping) else width)
    # Which channels go does not matter (the weights are re-initialised); magnitude keeps it
    # deterministic.
    model = prune_channels_(
        model,
        ratio,
        ctx,
        skipped,
        importance=tp.importance.GroupMagnitudeImportance(p=1),
        knob="student_width",
    )
    return reinitialise_(model)


@dataclass(frozen=True)
class StudentWidthConfig(KnobConfig):
    """``value``: the student's channel width as a fraction of the teacher's (1 = no student),
    or per resolution stage ``{"14x14": 0.5, "*": 1.0}``."""

    value: float | Mapping[str, float] = 1.0


@register_knob
class StudentWidth(Knob):
    name = "student_width"
    config = StudentWidthConfig
    off = 1.0
    order = 10
    structural = True
    per_layer = True
    # per stage in an allocated study only where --allocate names it: its sensitivity rows are a
    # proxy (the teacher thinned, not a student trained), not yet measured to help on a real task
    allocated_by_default = False
    limits = (0.05, 1.0)
    default_space = {"low": 0.25, "high": 1.0, "step": 0.125}
    probe_value = 0.5
    help = (
        "channel width of a student trained from scratch by distillation (1 = no student); per "
        "layer: one width per resolution stage"
    )

    def apply(self, model: nn.Module, config: StudentWidthConfig, ctx: ApplyContext) -> Applied:
        skipped: list[str] = []
        value = config.value
        model = thin_copy_(model, dict(value) if isinstance(value, Mapping) else float(value), ctx, skipped)
        return Applied(model, facts={"from_scratch": True}, skipped=tuple(skipped))

    def value_text(self, value: Any, facts=None) -> str | None:
        if not isinstance(value, Mapping):
            return None

        # every stage (there are few), the largest feature maps first, the rest last
        def size(stage: str) -> int:
            dims = stage.split("x")
            return -int(dims[0]) * int(dims[1]) if len(dims) == 2 and all(d.isdigit() for d in dims) else 0

        order = sorted((g for g in value if g != "*"), key=size) + (["*"] if "*" in value else [])
        return "{" + ", ".join(f"{g}: {float(value[g]):g}" for g in order) + "}"

    # -- per-layer search: each stage of the trained teacher thinned alone -----------------------

    title = "thinned to width (teacher's weights, a proxy)"
    compresses_upward = False
    sensitivity_points = (0.75, 0.5, 0.25)

    def layer_groups(self, model: nn.Module, ctx: ProbeContext) -> tuple[list[LayerGroup], list[str]]:
        try:
            stages = student_stages(model, ctx.example_input, ctx.num_classes)
        except Exception as e:  # noqa: BLE001 - torch-pruning cannot trace this model whole
            return [], [skip_note(self.name, "*", f"torch-pruning's graph failed ({type(e).__name__})")]
        ctx.cache["stages"] = stages
        return [LayerGroup(s.name, s.layers, s.params) for s in stages], []

    def probe_(self, model: nn.Module, values: Mapping[str, float], ctx: ProbeContext) -> nn.Module:
        stages = ctx.cache.get("stages") or student_stages(model, ctx.example_input, ctx.num_classes)
        return magnitude_probe_(model, stage_ratios(stages, {**dict(values), "*": 1.0}, self.name), ctx)

    @contextlib.contextmanager
    def probed(
        self, model: nn.Module, group: LayerGroup, value: float, ctx: ProbeContext
    ) -> Iterator[tuple[nn.Module, float]]:
        thinned = self.probe_(copy.deepcopy(model), {group.name: value}, ctx)
        check_channels_left(thinned, f"width {value:g}")
        # channels round to multiples of 8: the width the stage's channels really kept
        stages = ctx.cache.get("stages") or student_stages(model, ctx.example_input, ctx.num_classes)
        roots = next(s for s in stages if s.name == group.name).roots
        before = sum(model.get_submodule(r).weight.shape[0] for r in roots)
        yield thinned, round(sum(thinned.get_submodule(r).weight.shape[0] for r in roots) / before, 4)

    def unmeasured_value(self, budget: float, grid) -> Any:
        return float(budget)  # a stage the table lacks (a study measured before) takes the budget
