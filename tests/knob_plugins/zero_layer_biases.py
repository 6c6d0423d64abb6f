"""A per-layer knob defined outside tradeoff, in one file: zero each layer's smallest biases.

``tradeoff search --plugin zero_layer_biases`` imports this module. Besides the knob contract
(``apply``), it implements what per-layer search asks of a knob (``spaces._base.Knob``, "per-layer
search"): its layer groups (every conv or linear layer with a bias), how to change a few of them
(``probe_``), the settings the sensitivity pass measures, and which way its budget points; an
``allocated`` study then measures each layer's sensitivity and sets the knob layer by layer.

``bias_net`` is a model for it (``--model zero_layer_biases:bias_net``) with two hidden layers
of known, different sensitivity: ``idle``'s biases are frozen at zero, so zeroing them changes
nothing, while ``hidden``'s are trained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from tradeoff.spaces import (
    Applied,
    ApplyContext,
    Knob,
    KnobConfig,
    LayerGroup,
    ProbeContext,
    register_knob,
    unknown_groups,
    value_for,
)


@dataclass(frozen=True)
class ZeroLayerBiasesConfig(KnobConfig):
    """``value``: the fraction of each layer's bias values, smallest magnitude first, set to zero;
    one number or a mapping from layer group to number."""

    value: float | Mapping[str, float] = 0.0


@torch.no_grad()
def zero_smallest_(bias: torch.Tensor, fraction: float) -> None:
    k = int(round(fraction * bias.numel()))
    if k:
        threshold = bias.abs().flatten().kthvalue(k).values
        bias[bias.abs() <= threshold] = 0.0


def _biased_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None
    ]


@register_knob
class ZeroLayerBiases(Knob):
    name = "zero_layer_biases"
    config = ZeroLayerBiasesConfig
    off = 0.0
    order = 40
    per_layer = True
    limits = (0.0, 1.0)
    default_space = {"low": 0.0, "high": 1.0, "step": 0.25}
    probe_value = 0.5
    help = "fraction of each conv/linear layer's smallest biases set to zero"
    # per-layer search
    title = "biases zeroed at fraction"
    compresses_upward = True  # more zeros: fewer stored values, so a budget is a floor
    sensitivity_points = (0.5, 1.0)

    def apply(self, model: nn.Module, config: ZeroLayerBiasesConfig, ctx: ApplyContext) -> Applied:
        unknown_groups(self.name, config.value, model)
        for name, m in _biased_layers(model):
            zero_smallest_(m.bias, float(value_for(config.value, name, 0.0)))
        return Applied(model, facts={"sparse": True})  # params then counts non-zeros

    def layer_groups(self, model: nn.Module, ctx: ProbeContext) -> tuple[list[LayerGroup], list[str]]:
        return [LayerGroup(n, (n,), int(m.bias.numel())) for n, m in _biased_layers(model)], []

    def probe_(self, model: nn.Module, values: Mapping[str, float], ctx: ProbeContext) -> nn.Module:
        for name, fraction in values.items():
            zero_smallest_(model.get_submodule(name).bias, fraction)
        return model


class BiasNet(nn.Module):
    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.hidden = nn.Linear(in_features, 32)
        self.idle = nn.Linear(32, 32)
        self.out = nn.Linear(32, num_classes)
        nn.init.zeros_(self.idle.bias)
        self.idle.bias.requires_grad_(False)  # stays zero through training: zeroing it is harmless

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.idle(torch.relu(self.hidden(x.flatten(1))))))


def bias_net(in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    return BiasNet(in_channels * image_size * image_size, num_classes)
