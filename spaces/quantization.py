"""Weight bit-width: post-training static quantization on the runtime's own int8 kernels.

The runtime the model is deployed in quantizes it with its own tool (``Runtime.quantize`` in
``spaces.runtimes``): for ONNX Runtime and OpenVINO, ONNX Runtime's static quantization (QDQ,
unsigned activations, per-channel weights); for TorchScript (and a CUDA target's CPU twin)
PyTorch's FX graph-mode static quantization on the x86/fbgemm int8 kernels.

Bits and why these: 32 is float; 8 runs on real int8 kernels (per-channel symmetric weights,
int8 activations calibrated on training inputs), so its latency is measured, not modelled.
Below 8 bits (4 and 2 by default; any of 2-7 may be asked for) each weight is restricted per
channel to the 2^(b-1)-1 symmetric levels of b bits, stored packed (``search.trial.measure`` counts
b bits a weight plus the scales) and computed on the same int8 kernels: exact arithmetic for
those values, with latency that is the 8-bit kernels' (recorded on the trial). 16 bits is left
out: the CPU runtimes have no fast fp16 convolution on these CPUs, so it would only halve the
size while slowing the model down, and bf16 is not exact enough to stand in for it.
Quantization is applied last, after fine-tuning.

Per layer (mixed precision): ``value`` may map layer groups to bits (``{"conv1": 8, "layer1":
4, "*": 2}``; a layer no group covers stays float). Float (32-bit) layers are left out of the
quantizer, so the runtime runs them on float kernels with quantize/dequantize steps around them;
int8 and sub-8-bit layers are quantized as above, each at its own levels. The deployed file
records each weight's bits, and size, energy and memory count each layer at its own.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tradeoff.spaces._base import (
    Applied,
    ApplyContext,
    Knob,
    KnobConfig,
    LayerGroup,
    PlanError,
    ProbeContext,
    SpaceError,
    register_knob,
    unknown_groups,
    value_for,
)

ALLOWED_BITS = (2, 3, 4, 5, 6, 7, 8, 32)


def bit_budgets(choices: list[int]) -> list[int | float]:
    """The average-bits budgets an allocated study searches: the bit-widths of the space and the
    midpoints between neighbouring sub-8-bit ones (4 and 2 give 3), so a mixed plan can sit
    between two uniform ones; 32 (float) as it is."""
    low = sorted(c for c in choices if c <= 8)
    mids = [(a + b) / 2 for a, b in zip(low, low[1:])]
    out = sorted({*choices, *(int(m) if float(m).is_integer() else m for m in mids)}, reverse=True)
    return out


@torch.no_grad()
def fake_quantize(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``w`` at the symmetric per-output-channel levels of ``bits`` bits (what the runtime's
    file stores: ``spaces.runtimes.onnx_quantization.restrict_weights``; 8 bits: 127 levels)."""
    levels = 2 ** (bits - 1) - 1
    peak = w.detach().abs().flatten(1).max(dim=1).values.clamp_min(1e-12)
    scale = (peak / levels).view(-1, *([1] * (w.dim() - 1)))
    return (w / scale).round().clamp(-levels, levels) * scale


def quantize(
    model: nn.Module, bits: int | Mapping[str, int], ctx: ApplyContext, skipped: list[str]
) -> nn.Module:
    """An int8 (or b-bit-valued int8) copy of float ``model``, made by the tool of the runtime
    it is deployed in (``ctx.runtime``, see :mod:`tradeoff.spaces.runtimes`), calibrated on
    ``ctx.calibration``."""
    from tradeoff.spaces.runtimes import get_runtime

    return get_runtime(ctx.runtime).quantize(model, bits, ctx, skipped)


def layer_bits(model: nn.Module, bits: Mapping[str, int]) -> dict[str, int]:
    """{conv/linear module of the float ``model``: its bits} for a per-layer value."""
    return {
        n: int(value_for(bits, n, 32))
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }


@dataclass(frozen=True)
class WeightBitsConfig(KnobConfig):
    """``value``: bits a weight is stored in (32 = float), one number or a mapping from layer
    group to number."""

    value: int | Mapping[str, int] = 32


@register_knob
class WeightBits(Knob):
    name = "weight_bits"
    config = WeightBitsConfig
    off = 32
    order = 50
    structural = False
    per_layer = True
    limits = (2, 32)
    default_space = {"choices": [32, 8, 4, 2]}
    probe_value = 8
    help = "weight bit-width: 32 (float), 8 (int8 kernels), 2-7 (packed, computed on int8 kernels)"
    # per-layer search: each conv/linear layer's weights at the space's bit-widths (activations
    # stay float: they are 8-bit for every layer alike, so they do not tell layers apart)
    title = "weights at bits"

    def validate(self, spec):
        if "choices" not in spec and spec.get("low") is not None and spec.get("low") == spec.get("high"):
            spec = {"choices": [spec["low"]]}  # --space weight_bits=8: one fixed choice
        if "choices" not in spec:
            raise SpaceError(f"`{self.name}` is a set of choices from {list(ALLOWED_BITS)}, e.g. 32,8,4.")
        bad = [c for c in spec["choices"] if c not in ALLOWED_BITS]
        choices = [int(c) for c in spec["choices"] if c in ALLOWED_BITS]
        if bad or not choices:
            raise SpaceError(f"`{self.name}` choices {bad or '[]'} are not in {list(ALLOWED_BITS)}.")
        return {"choices": choices}

    def check_value(self, value) -> None:
        if value not in ALLOWED_BITS:
            raise PlanError(f"{self.name}={value!r} is not one of {list(ALLOWED_BITS)}")

    def apply(self, model: nn.Module, config: WeightBitsConfig, ctx: ApplyContext) -> Applied:
        skipped: list[str] = []
        if not isinstance(config.value, Mapping):
            bits = int(config.value)
            return Applied(
                quantize(model, bits, ctx, skipped), facts={"weight_bits": bits}, skipped=tuple(skipped)
            )
        unknown_groups(self.name, config.value, model)
        per_layer = layer_bits(model, config.value)
        if len(set(per_layer.values())) == 1:  # one bit-width after all: the uniform path
            bits = next(iter(per_layer.values()))
            if bits == 32:
                return Applied(model)
            return Applied(
                quantize(model, bits, ctx, skipped), facts={"weight_bits": bits}, skipped=tuple(skipped)
            )
        low = max((b for b in per_layer.values() if b <= 8), default=32)
        facts = {"weight_bits": low, "layer_bits": per_layer}
        return Applied(quantize(model, dict(config.value), ctx, skipped), facts=facts, skipped=tuple(skipped))

    # -- per-layer search -------------------------------------------------------------------

    def layer_groups(self, model: nn.Module, ctx: ProbeContext) -> tuple[list[LayerGroup], list[str]]:
        return [
            LayerGroup(n, (n,), int(m.weight.numel()))
            for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))
        ], []

    def sensitivity_values(self, spec: Mapping[str, Any] | None) -> list[float]:
        bits = sorted({int(b) for b in (spec or {}).get("choices", [8]) if int(b) < 32}, reverse=True)
        return [float(b) for b in bits or [8]]

    @torch.no_grad()
    def probe_(self, model: nn.Module, values: Mapping[str, float], ctx: ProbeContext) -> nn.Module:
        for group, bits in values.items():
            for m in model.get_submodule(group).modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.data.copy_(fake_quantize(m.weight.data, int(bits)))
        return model

    @contextlib.contextmanager
    def probed(
        self, model: nn.Module, group: LayerGroup, value: float, ctx: ProbeContext
    ) -> Iterator[tuple[nn.Module, float]]:
        m = model.get_submodule(group.name)
        original = m.weight.data.clone()
        try:
            m.weight.data.copy_(fake_quantize(original, int(value)))
            yield model, value
        finally:
            m.weight.data.copy_(original)

    def combination_size(self, rng: random.Random, groups: int) -> int:
        return max(1, round(rng.uniform(0.25, 0.75) * groups))

    def budget_choices(self, spec: Mapping[str, Any]) -> list[Any] | None:
        choices = spec.get("choices")
        if choices and any(int(b) <= 8 for b in choices):
            return bit_budgets(list(choices))
        return None

    def layer_grid(self, spec: Mapping[str, Any], step: float) -> list[float]:
        values = super().layer_grid(spec, step)
        if any(v <= 8 for v in values if v != self.off):
            # the allocation mixes the quantized widths: a float layer among int8 ones costs a
            # dequantize/quantize pair and float kernels, a latency the table does not see (a plan
            # by hand, or --granularity layer, may still keep a layer in float)
            return [v for v in values if v <= 8]
        return values

    def unmeasured_value(self, budget: float, grid: Sequence[float]) -> Any:
        # the layers the table lacks: the nearest bit-width at or above the budget
        return int(min((v for v in grid if v >= budget), default=max(grid)))
