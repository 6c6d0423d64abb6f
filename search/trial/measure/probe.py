"""What every figure's measurement reads: one model, in the forms each figure needs."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tradeoff.spaces.runtimes import PYTORCH_RUNTIME


@dataclass(eq=False)
class Probe:
    """One model under measurement. ``model`` is the form that ships (possibly quantized),
    ``deployed`` that form in ``runtime`` on ``device`` (a session of ONNX Runtime or OpenVINO,
    or traced and frozen TorchScript: accuracy, latency and energy run it), ``float_model`` the
    same network before quantization (FLOPs, parameters and activations: fvcore and the
    activation tracer do not follow quantized kernels). ``reference`` is the baseline deployed
    in the same runtime, timed interleaved with the model so that machine load cannot fake a
    speed-up, and ``reference_ms`` the baseline's latency the ratio is scaled by (None: the
    baseline's own median in the same window). ``weight_bits``, ``layer_bits`` (mixed
    precision, per conv/linear module of ``float_model``) and ``sparse`` say how the weights are
    stored; ``values`` holds the figures measured so far, for a figure that
    ``needs`` another."""

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
    layer_bits: dict[str, int] | None = None  # mixed precision: {conv/linear module: bits}
    sparse: bool = False
    runtime: str = PYTORCH_RUNTIME
    reference: Any = None
    reference_ms: float | None = None
    values: dict[str, float] = field(default_factory=dict)

    @property
    def cpu_example(self) -> torch.Tensor:
        return self.example_input.cpu()

    @functools.cached_property
    def folded_model(self) -> nn.Module | None:
        """The float model with batch-norm folded, or None where torch.fx cannot trace it."""
        from tradeoff.search.trial.measure.flops import fold_batchnorm

        return fold_batchnorm(self.float_model)

    @property
    def folded(self) -> bool:
        return self.folded_model is not None

    @functools.cached_property
    def flop_counts(self) -> tuple[int, int]:
        """(total flops, of which multiply-accumulates), fvcore's convention, on the float model
        as deployed (batch-norm folded where it traces)."""
        from tradeoff.search.trial.measure.flops import count_flops

        return count_flops(self.folded_model or self.float_model, self.cpu_example, fold=False)

    @property
    def activation_bytes_per_element(self) -> int:
        """Bytes of one activation value as the deployed model holds it: int8 kernels keep
        activations in 8 bits, float kernels (float models, int8 weights folded to float) in 32."""
        return 1 if getattr(self.deployed, "int8_kernels", self.weight_bits <= 8) else 4
