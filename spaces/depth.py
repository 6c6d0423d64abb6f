"""Depth: whole residual blocks replaced by the identity.

A residual network behaves like an ensemble of shallower ones, and loses little when one block
goes (Veit et al. 2016); depth pruning is one of the two axes of NVIDIA's Minitron. Unlike width,
a dropped block also removes its layers' fixed cost per call, which is what sets latency on a
CPU runtime at batch 1.

Which blocks can go is found for any model by one forward pass, not by class names: a module
(not the whole model) that is called once with one tensor, returns a tensor of the same shape,
holds parameters, and returns its input unchanged when all its parameters are zero (the input
it saw in that pass, and a positive one). That is a
residual block whose branch then adds nothing: torchvision's BasicBlock and Bottleneck without a
downsample (``relu(x + 0) = x`` on their non-negative input), MobileNetV2's and EfficientNet's
inverted residuals with a skip, RegNet's and ConvNeXt's blocks. A plain convolution or a
normalisation layer returns zeros instead, a squeeze-excitation module half its input, a block
that downsamples another shape: none of them is a group. Of nested candidates the innermost are
the groups (resnet18's ``layer1`` is two blocks, not one). The test itself is hand-written: no
library lists droppable blocks of an arbitrary graph (torch-pruning's dependency graph couples
channels, not blocks).

The value (``block_drop``): the fraction of the droppable blocks dropped, the ones whose output
is most like their input first (ShortGPT's Block Influence, ``1 - cos(input, output)`` per
image, averaged over the first calibration batch; Men et al. 2024), or per block (per-layer:
``{block: 1}`` drops it, 0 keeps it; a value of 0.5 or more drops). The sensitivity pass
measures each block alone replaced by the identity, so ``allocated`` drops the least harmful
first. Applied first (before the student's width, pruning and low-rank); the fine-tune
(distillation) repairs the rest. The blocks a plan dropped are in ``Facts.dropped_blocks``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from tradeoff.spaces._base import (
    Applied,
    ApplyContext,
    Facts,
    Knob,
    KnobConfig,
    LayerGroup,
    PlanError,
    ProbeContext,
    register_knob,
    skip_note,
    unknown_groups,
    value_for,
)

NO_BLOCK = (
    "no module of this model returns its input when its parameters are zero "
    "(no residual block keeps its input's shape)"
)


@torch.no_grad()
def droppable_blocks(model: nn.Module, example_input: torch.Tensor) -> list[tuple[str, int]]:
    """The blocks of ``model`` that can be replaced by the identity (see the module docstring),
    in the order the forward pass calls them: (module name, parameters)."""
    names = {m: n for n, m in model.named_modules() if n}
    calls: dict[nn.Module, int] = {}
    inputs: dict[nn.Module, torch.Tensor | None] = {}
    order: list[nn.Module] = []

    def before(module, args, kwargs):
        calls[module] = calls.get(module, 0) + 1
        one = len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor)
        # a clone: the module (or a later one) may change its input in place
        inputs[module] = args[0].detach().clone() if one else None

    def after(module, args, output):
        x = inputs.get(module)
        if not (isinstance(output, torch.Tensor) and x is not None and output.shape == x.shape):
            inputs[module] = None
        if module not in order:
            order.append(module)

    handles = []
    for m in names:
        if any(True for _ in m.parameters()):
            handles.append(m.register_forward_pre_hook(before, with_kwargs=True))
            handles.append(m.register_forward_hook(after))
    was_training = model.training
    try:
        model.eval()(example_input)
    finally:
        for h in handles:
            h.remove()
    candidates = []
    gen = torch.Generator().manual_seed(0)
    for m in order:
        x = inputs.get(m)
        if calls[m] != 1 or x is None:
            continue  # called twice (shared), or not one tensor in and the same shape out
        zeros = {n: torch.zeros_like(p) for n, p in m.named_parameters()}
        # the input it saw, and a positive one: on an input of zeros (dead activations of an
        # untrained network) a normalisation layer would pass for a block
        probes = (x, x.abs() + torch.rand(x.shape, generator=gen, dtype=x.dtype).to(x.device) + 0.1)
        try:
            outs = [functional_call(m, zeros, (p.clone(),)) for p in probes]
        except Exception:  # noqa: BLE001 - a module that cannot run alone is no block to drop
            continue
        if all(
            isinstance(out, torch.Tensor) and out.shape == p.shape and torch.allclose(out, p, atol=1e-6)
            for out, p in zip(outs, probes)
        ):
            candidates.append(names[m])
    model.train(was_training)
    inner = [c for c in candidates if not any(o.startswith(c + ".") for o in candidates)]
    return [(n, sum(p.numel() for p in model.get_submodule(n).parameters())) for n in inner]


@torch.no_grad()
def block_influence(model: nn.Module, blocks: list[str], x: torch.Tensor) -> dict[str, float]:
    """ShortGPT's Block Influence of each block on the images ``x``: one minus the cosine between
    a block's input and output, per image, averaged (0: the block changes nothing)."""
    scores: dict[str, float] = {}

    def hook(name):
        def record(module, args, output):
            a, b = args[0].flatten(1).float(), output.flatten(1).float()
            scores[name] = float((1 - nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)).mean())

        return record

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in blocks]
    was_training = model.training
    try:
        model.eval()(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return scores


def drop_blocks_(model: nn.Module, blocks: list[str]) -> nn.Module:
    """``model`` with each named block replaced by ``nn.Identity``."""
    for name in blocks:
        model.set_submodule(name, nn.Identity())
    return model


@dataclass(frozen=True)
class BlockDropConfig(KnobConfig):
    """``value``: the fraction of the droppable residual blocks replaced by the identity (least
    influential first), or per block ``{block: 1}`` (dropped) / ``0`` (kept)."""

    value: float | Mapping[str, float] = 0.0


@register_knob
class BlockDrop(Knob):
    name = "block_drop"
    config = BlockDropConfig
    off = 0.0
    order = 5
    structural = True
    per_layer = True
    limits = (0.0, 1.0)
    default_space = {"low": 0.0, "high": 0.6, "step": 0.2}
    searched_by_default = False
    probe_value = 0.4
    help = (
        "fraction of the residual blocks replaced by the identity, least influential first "
        "(per layer: 1 drops a block); not searched unless --space names it"
    )

    def apply(self, model: nn.Module, config: BlockDropConfig, ctx: ApplyContext) -> Applied:
        blocks = [n for n, _ in droppable_blocks(model, ctx.example_input)]
        if not blocks:
            return Applied(model, skipped=(skip_note(self.name, "*", NO_BLOCK),))
        value = config.value
        if isinstance(value, Mapping):
            unknown_groups(self.name, value, model)
            named = [g for g, v in value.items() if g != "*" and float(v) >= 0.5]
            for group in named:
                if not any(b == group or b.startswith(group + ".") for b in blocks):
                    raise PlanError(
                        f"{self.name}: {group} is not a block that can be dropped (its output's "
                        "shape differs from its input's, or it is no residual block); droppable: "
                        + ", ".join(blocks)
                    )
            drop = [b for b in blocks if float(value_for(value, b, 0.0)) >= 0.5]
        else:
            count = math.floor(float(value) * len(blocks) + 0.5)
            x = ctx.calibration[0] if ctx.calibration else ctx.example_input
            influence = block_influence(model, blocks, x)
            ranked = sorted(blocks, key=lambda b: (influence.get(b, math.inf), blocks.index(b)))
            drop = sorted(ranked[:count], key=blocks.index)
        return Applied(drop_blocks_(model, drop), facts={"dropped_blocks": tuple(drop)})

    def value_text(self, value: Any, facts: Facts | Mapping[str, Any] | None = None) -> str | None:
        dropped = _dropped(facts)
        if isinstance(value, Mapping):
            if dropped is None:
                dropped = [g for g, v in value.items() if float(v) >= 0.5]
            return ", ".join(dropped) if dropped else "none"
        if dropped is None:
            return None
        return f"{value:g} ({', '.join(dropped) if dropped else 'none'})"

    # -- per-layer search: each block alone replaced by the identity ----------------------------

    title = "dropped (replaced by the identity)"
    compresses_upward = True
    sensitivity_points = (1.0,)

    def layer_groups(self, model: nn.Module, ctx: ProbeContext) -> tuple[list[LayerGroup], list[str]]:
        blocks = droppable_blocks(model, ctx.example_input[:1])
        if not blocks:
            return [], [skip_note(self.name, "*", NO_BLOCK)]
        groups = []
        for name, params in blocks:
            layers = tuple(
                f"{name}.{n}"
                for n, m in model.get_submodule(name).named_modules()
                if n and isinstance(m, (nn.Conv2d, nn.Linear))
            )
            groups.append(LayerGroup(name, layers or (name,), params))
        return groups, []

    def probe_(self, model: nn.Module, values: Mapping[str, float], ctx: ProbeContext) -> nn.Module:
        return drop_blocks_(model, [g for g, v in values.items() if g != "*" and float(v) >= 0.5])

    @contextlib.contextmanager
    def probed(
        self, model: nn.Module, group: LayerGroup, value: float, ctx: ProbeContext
    ) -> Iterator[tuple[nn.Module, float]]:
        # swapped in place and back: no copy of the teacher per block
        block = model.get_submodule(group.name)
        model.set_submodule(group.name, nn.Identity())
        try:
            yield model, 1.0
        finally:
            model.set_submodule(group.name, block)

    def layer_grid(self, spec: Mapping[str, Any], step: float) -> list[float]:
        return [0.0, 1.0]  # a block is kept or dropped


def _dropped(facts: Facts | Mapping[str, Any] | None) -> list[str] | None:
    if facts is None:
        return None
    dropped = facts.get("dropped_blocks") if isinstance(facts, Mapping) else facts.dropped_blocks
    return None if dropped is None else list(dropped)
