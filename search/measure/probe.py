"""What every figure's measurement reads: one model, in the forms each figure needs."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(eq=False)
class Probe:
    """One model under measurement. ``model`` is the form that ships (possibly quantized),
    ``deployed`` its traced and frozen TorchScript on ``device`` (accuracy, latency and energy
    run it), ``float_model`` the same network before quantization (FLOPs, parameters and
    activations: fvcore and the activation tracer do not follow quantized kernels).
    ``weight_bits`` and ``sparse`` say how the weights are stored; ``values`` holds the figures
    measured so far, for a figure that ``needs`` another."""

    model: nn.Module
    float_model: nn.Module
    deployed: Any
    example_input: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    device: str = "cpu"
    warmup: int = 10
    repeats: int = 50
    energy_seconds: float = 1.0
    weight_bits: int = 32
    sparse: bool = False
    values: dict[str, float] = field(default_factory=dict)

    @property
    def cpu_example(self) -> torch.Tensor:
        return self.example_input.cpu()

    @functools.cached_property
    def flop_counts(self) -> tuple[int, int]:
        """(total flops, of which multiply-accumulates), fvcore's convention, on the float model."""
        from tradeoff.search.measure.flops import count_flops

        return count_flops(self.float_model, self.cpu_example)

    @property
    def activation_bytes_per_element(self) -> int:
        """Bytes of one activation value as the deployed model holds it: int8 kernels keep
        activations in 8 bits, float models in 32."""
        return 1 if self.weight_bits <= 8 else 4
