"""Structural channel pruning with torch-pruning.

What to remove: filters ranked by the L2 norm of the whole coupled group (torch-pruning's
``GroupMagnitudeImportance``), so a residual add or a concat prunes the same channels on every
layer it couples. How: torch-pruning's dependency-graph surgery. Channel counts are rounded to
multiples of 8, which keeps oneDNN/fbgemm CPU kernels on their fast, vectorised paths. The
classifier (the Linear that produces the class scores) keeps all its outputs.
"""

from __future__ import annotations

import torch_pruning as tp
from torch import nn

from spaces._base import ApplyContext, Knob, PlanError, register_knob

ROUND_TO = 8


def classifier_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """Layers whose outputs are the class scores: never pruned."""
    out = [
        m
        for m in model.modules()
        if (isinstance(m, nn.Linear) and m.out_features == num_classes)
        or (isinstance(m, nn.Conv2d) and m.out_channels == num_classes)
    ]
    return out[-1:] if out else []


def prune_channels_(model: nn.Module, ratio: float, ctx: ApplyContext) -> nn.Module:
    """Remove ``ratio`` of the output channels of every prunable group in place."""
    ignored = classifier_layers(model, ctx.num_classes)
    try:
        pruner = tp.pruner.BasePruner(
            model,
            ctx.example_input,
            importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio,
            ignored_layers=ignored,
            round_to=ROUND_TO,
        )
        pruner.step()
    except Exception as e:  # noqa: BLE001 - torch-pruning raises bare errors for unsupported graphs
        raise PlanError(f"structural pruning at ratio {ratio} failed: {type(e).__name__}: {e}") from e
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.out_channels == 0:
            raise PlanError(f"pruning left layer {name} with no channels")
    return model


@register_knob
class PruneRatio(Knob):
    name = "prune_ratio"
    off = 0.0
    order = 20
    structural = True
    limits = (0.0, 0.95)
    default_space = {"low": 0.0, "high": 0.8, "step": 0.05}
    help = "fraction of each layer's output channels removed by structural pruning"

    def apply(self, model: nn.Module, value: float, ctx: ApplyContext) -> nn.Module:
        return prune_channels_(model, float(value), ctx)
