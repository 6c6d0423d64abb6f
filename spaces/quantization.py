"""Weight bit-width: post-training static quantization on the runtime's own int8 kernels.

For ONNX Runtime and OpenVINO the runtime's tool quantizes (``spaces.runtime.quantize_onnx``:
QDQ, unsigned activations, per-channel weights). For TorchScript (and a CUDA target's CPU
twin) PyTorch's FX graph-mode static quantization on the x86/fbgemm int8 kernels, below.

Bits and why these: 32 is float; 8 runs on real int8 kernels (per-channel symmetric weights,
int8 activations calibrated on training inputs), so its latency is measured, not modelled.
Below 8 bits (4 and 2 by default; any of 2-7 may be asked for) each weight is restricted per
channel to the 2^(b-1)-1 symmetric levels of b bits, stored packed (``search.measure`` counts
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

import copy
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from tradeoff.spaces._base import (
    Applied,
    ApplyContext,
    Knob,
    KnobConfig,
    PlanError,
    SpaceError,
    register_knob,
    skip_note,
    unknown_groups,
    value_for,
)

ALLOWED_BITS = (2, 3, 4, 5, 6, 7, 8, 32)
ENGINE = "x86"


def qconfig_mapping(
    bits: int | Mapping[str, int], *, layers_only: bool = False, model: nn.Module | None = None
):
    """PyTorch's default x86 mapping (b-bit-valued weights below 8 bits). ``layers_only``
    quantizes conv and linear layers alone and leaves every other op in float. ``bits`` per
    layer (with ``model``, whose conv/linear modules it names): each layer gets its own
    weight observer, a 32-bit layer none (it stays float)."""
    if not isinstance(bits, int):
        layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        chosen = {n: int(value_for(bits, n, 32)) for n in layers}
        low = [b for b in chosen.values() if b <= 8]
        mapping = qconfig_mapping(max(low, default=8), layers_only=layers_only)
        for name, b in chosen.items():
            mapping.set_module_name(name, qconfig_mapping(b).global_qconfig if b <= 8 else None)
        return mapping
    from torch.ao.quantization import QConfig, QConfigMapping, get_default_qconfig_mapping
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    mapping = get_default_qconfig_mapping(ENGINE)
    qconfig = mapping.global_qconfig
    if bits < 8:
        levels = 2 ** (bits - 1) - 1
        weight = PerChannelMinMaxObserver.with_args(
            dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-levels, quant_max=levels
        )
        qconfig = QConfig(activation=qconfig.activation, weight=weight)
        mapping.set_global(qconfig)
    if layers_only:
        # conv/linear with the batch-norms and ReLUs that fuse into them (fusion wants one qconfig)
        mapping = QConfigMapping()
        for kind in (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.ReLU, torch.nn.functional.relu):
            mapping.set_object_type(kind, qconfig)
    return mapping


@torch.no_grad()
def quantize(
    model: nn.Module, bits: int | Mapping[str, int], ctx: ApplyContext, skipped: list[str]
) -> nn.Module:
    """An int8 (or b-bit-valued int8) copy of float ``model``, calibrated on ``ctx.calibration``."""
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if ctx.runtime in ("onnxruntime", "openvino"):
        from tradeoff.spaces.runtime import quantize_onnx

        if not ctx.calibration:
            raise PlanError("quantization needs calibration inputs; none were given")
        try:
            return quantize_onnx(
                model, bits, ctx.example_input, ctx.calibration, ctx.runtime, form=ctx.int8_form
            )
        except Exception as e:  # noqa: BLE001 - the exporter or the quantizer rejects the model
            raise PlanError(
                f"{_bits_text(bits)} quantization in {ctx.runtime} failed: {type(e).__name__}: {e}"
            ) from e
    if ENGINE not in torch.backends.quantized.supported_engines:
        raise PlanError(f"this PyTorch has no {ENGINE} quantized engine; fix weight_bits=32")
    torch.backends.quantized.engine = ENGINE
    if not ctx.calibration:
        raise PlanError("quantization needs calibration inputs; none were given")
    # HistogramObserver's range search runs 5x slower with denormals flushed (measured on
    # mobilenet_v2); calibrate without, and restore the flush that measurement relies on.
    torch.set_flush_denormal(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            try:
                return _quantize_fx(model, qconfig_mapping(bits, model=model), ctx, prepare_fx, convert_fx)
            except Exception as e:  # noqa: BLE001 - an int8 kernel that rejects some op or shape
                first = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                quantized = _quantize_fx(
                    model, qconfig_mapping(bits, layers_only=True, model=model), ctx, prepare_fx, convert_fx
                )
                skipped.append(
                    skip_note(
                        "weight_bits",
                        "ops other than conv/linear",
                        f"kept in float: the int8 model failed ({first})",
                    )
                )
                return quantized
        except Exception as e:  # noqa: BLE001 - FX cannot trace every model
            raise PlanError(f"{_bits_text(bits)} quantization failed: {type(e).__name__}: {e}") from e
        finally:
            torch.set_flush_denormal(True)


def _bits_text(bits) -> str:
    return f"{bits}-bit" if isinstance(bits, int) else "mixed-precision"


def layer_bits(model: nn.Module, bits: Mapping[str, int]) -> dict[str, int]:
    """{conv/linear module of the float ``model``: its bits} for a per-layer value."""
    return {
        n: int(value_for(bits, n, 32))
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }


def _quantize_fx(model: nn.Module, mapping, ctx: ApplyContext, prepare_fx, convert_fx) -> nn.Module:
    """Prepare, calibrate, convert, and check that the int8 model runs on the example input."""
    prepared = prepare_fx(copy.deepcopy(model).eval(), mapping, example_inputs=(ctx.example_input,))
    for batch in ctx.calibration:
        prepared(batch)
    quantized = convert_fx(prepared).eval()
    quantized(ctx.example_input)
    return quantized


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
