"""Student width: a thinner copy of the teacher's architecture, trained by distillation.

The thin copy is made for any architecture the same way: torch-pruning's dependency graph
removes ``1 - width`` of every coupled channel group (rounded to multiples of 8), then every
weight is re-initialised, so the student inherits the teacher's shape, not its weights. The
runner then trains it with Hinton's soft-target loss against the teacher
(``search.task.training.kd_loss``), for ``student_steps`` rather than the short fine-tune.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch_pruning as tp
from torch import nn

from tradeoff.spaces._base import Applied, ApplyContext, Knob, KnobConfig, register_knob
from tradeoff.spaces.pruning import prune_channels_


def reinitialise_(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()
        if hasattr(m, "reset_running_stats"):
            m.reset_running_stats()
    return model


def thin_copy_(model: nn.Module, width: float, ctx: ApplyContext, skipped: list[str]) -> nn.Module:
    """Shrink every prunable layer's channels to ``width`` and re-initialise all weights."""
    # Which channels go does not matter (the weights are re-initialised); magnitude keeps it
    # deterministic.
    model = prune_channels_(
        model,
        1.0 - width,
        ctx,
        skipped,
        importance=tp.importance.GroupMagnitudeImportance(p=1),
        knob="student_width",
    )
    return reinitialise_(model)


@dataclass(frozen=True)
class StudentWidthConfig(KnobConfig):
    """``value``: the student's channel width as a fraction of the teacher's (1 = no student)."""

    value: float = 1.0


@register_knob
class StudentWidth(Knob):
    name = "student_width"
    config = StudentWidthConfig
    off = 1.0
    order = 10
    structural = True
    limits = (0.05, 1.0)
    default_space = {"low": 0.25, "high": 1.0, "step": 0.125}
    probe_value = 0.5
    help = "channel width of a student trained from scratch by distillation (1 = no student)"

    def apply(self, model: nn.Module, config: StudentWidthConfig, ctx: ApplyContext) -> Applied:
        skipped: list[str] = []
        model = thin_copy_(model, float(config.value), ctx, skipped)
        return Applied(model, facts={"from_scratch": True}, skipped=tuple(skipped))
