"""A knob defined outside tradeoff, in one file: zero the smallest biases.

``tradeoff search --plugin zero_biases`` imports this module (the study stores its name, so
workers and `export` import it too); ``register_knob`` makes it searchable, applied after
fine-tuning (not structural), shown in every plan and exported with the plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tradeoff.spaces import Applied, ApplyContext, Knob, KnobConfig, register_knob


@dataclass(frozen=True)
class ZeroBiasesConfig(KnobConfig):
    """``value``: the fraction of all conv and linear bias values, smallest magnitude first, set
    to zero."""

    value: float = 0.0


@register_knob
class ZeroBiases(Knob):
    name = "zero_biases"
    config = ZeroBiasesConfig
    off = 0.0
    order = 40
    limits = (0.0, 1.0)
    default_space = {"low": 0.0, "high": 1.0, "step": 0.25}
    probe_value = 0.5
    help = "fraction of the smallest conv/linear biases set to zero"

    @torch.no_grad()
    def apply(self, model: nn.Module, config: ZeroBiasesConfig, ctx: ApplyContext) -> Applied:
        biases = [
            m.bias for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None
        ]
        if not biases:
            return Applied(model, skipped=("zero_biases: *: no conv or linear layer has a bias",))
        values = torch.cat([b.abs().flatten() for b in biases])
        k = int(round(config.value * len(values)))
        if k:
            threshold = values.kthvalue(k).values
            for b in biases:
                b[b.abs() <= threshold] = 0.0
        # the zeros are what a sparse encoding drops: params then counts non-zeros
        return Applied(model, facts={"sparse": True})
