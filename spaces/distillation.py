"""Student width: a thinner copy of the teacher's architecture, trained by distillation.

The thin copy is made for any architecture the same way: torch-pruning's dependency graph
removes ``1 - width`` of every coupled channel group (rounded to multiples of 8), then every
weight is re-initialised, so the student inherits the teacher's shape, not its weights. The
runner then trains it with Hinton's soft-target loss against the teacher
(``search.training.kd_loss``), for ``student_steps`` rather than the short fine-tune.
"""

from __future__ import annotations

import torch_pruning as tp
from torch import nn

from spaces._base import ApplyContext, Knob, register_knob
from spaces.pruning import prune_channels_


def reinitialise_(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()
        if hasattr(m, "reset_running_stats"):
            m.reset_running_stats()
    return model


def thin_copy_(model: nn.Module, width: float, ctx: ApplyContext) -> nn.Module:
    """Shrink every prunable layer's channels to ``width`` and re-initialise all weights."""
    # Which channels go does not matter (the weights are re-initialised); magnitude keeps it
    # deterministic.
    model = prune_channels_(
        model, 1.0 - width, ctx, importance=tp.importance.GroupMagnitudeImportance(p=1), knob="student_width"
    )
    reinitialise_(model)
    ctx.from_scratch = True
    return model


@register_knob
class StudentWidth(Knob):
    name = "student_width"
    off = 1.0
    order = 10
    structural = True
    limits = (0.05, 1.0)
    default_space = {"low": 0.25, "high": 1.0, "step": 0.125}
    probe_value = 0.5
    help = "channel width of a student trained from scratch by distillation (1 = no student)"

    def apply(self, model: nn.Module, value: float, ctx: ApplyContext) -> nn.Module:
        return thin_copy_(model, float(value), ctx)
