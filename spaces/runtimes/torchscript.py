"""PyTorch's traced and frozen TorchScript, with PyTorch's own int8 kernels (x86/fbgemm): the
runtime of a CUDA target (and of its CPU twin), and of a user who deploys PyTorch as it is.

Int8 is PyTorch's FX graph-mode static quantization: the default x86 mapping, per-channel
symmetric weights (b-bit-valued below 8 bits), int8 activations calibrated on training inputs;
where the int8 model rejects some op or shape, conv and linear layers alone are quantized.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping

import torch
from torch import nn

from tradeoff.spaces.runtimes import Runtime, register_runtime
from tradeoff.spaces.runtimes.onnx import ONNX_FILE, TORCHSCRIPT_FILE, onnx_twin

ENGINE = "x86"


def traced(model: nn.Module, example_input: torch.Tensor) -> torch.jit.ScriptModule:
    """``model`` traced and frozen (batch-norm folded, constants inlined)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.jit.freeze(torch.jit.trace(model.eval(), example_input, check_trace=False))


def qconfig_mapping(
    bits: int | Mapping[str, int], *, layers_only: bool = False, model: nn.Module | None = None
):
    """PyTorch's default x86 mapping (b-bit-valued weights below 8 bits). ``layers_only``
    quantizes conv and linear layers alone and leaves every other op in float. ``bits`` per
    layer (with ``model``, whose conv/linear modules it names): each layer gets its own
    weight observer, a 32-bit layer none (it stays float)."""
    from tradeoff.spaces._base import value_for

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


def quantize_fx(model: nn.Module, mapping, example_input: torch.Tensor, calibration) -> nn.Module:
    """Prepare, calibrate, convert, and check that the int8 model runs on the example input."""
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    prepared = prepare_fx(copy.deepcopy(model).eval(), mapping, example_inputs=(example_input,))
    for batch in calibration:
        prepared(batch)
    quantized = convert_fx(prepared).eval()
    quantized(example_input)
    return quantized


@register_runtime
class TorchScript(Runtime):
    name = "torchscript"
    devices = ("cpu", "cuda")
    distribution = "torch"
    module = "torch"
    file = TORCHSCRIPT_FILE
    int8_note = " (x86/fbgemm)"

    def deploy(self, model, example_input):
        return traced(model, example_input)

    @torch.no_grad()
    def quantize(self, model, bits, ctx, skipped):
        from tradeoff.spaces._base import PlanError, skip_note

        what = f"{bits}-bit" if isinstance(bits, int) else "mixed-precision"
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
                    return quantize_fx(
                        model, qconfig_mapping(bits, model=model), ctx.example_input, ctx.calibration
                    )
                except Exception as e:  # noqa: BLE001 - an int8 kernel that rejects some op or shape
                    text = str(e).strip()
                    first = f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"
                    mapping = qconfig_mapping(bits, layers_only=True, model=model)
                    quantized = quantize_fx(model, mapping, ctx.example_input, ctx.calibration)
                    skipped.append(
                        skip_note(
                            "weight_bits",
                            "ops other than conv/linear",
                            f"kept in float: the int8 model failed ({first})",
                        )
                    )
                    return quantized
            except Exception as e:  # noqa: BLE001 - FX cannot trace every model
                raise PlanError(f"{what} quantization failed: {type(e).__name__}: {e}") from e
            finally:
                torch.set_flush_denormal(True)

    def describe(self, deployed, device):
        if device.startswith("cuda"):
            return "TorchScript trace+freeze on CUDA, CUDA events"
        return f"TorchScript trace+freeze, {torch.get_num_threads()} CPU threads"

    def write(self, deployed, model, example_input, test_x, folder):
        import os

        torch.jit.save(deployed, os.path.join(folder, TORCHSCRIPT_FILE))
        files = {TORCHSCRIPT_FILE: {"format": "TorchScript (traced, frozen); torch.jit.load"}}
        onnx_info = onnx_twin(model, example_input, test_x, deployed, os.path.join(folder, ONNX_FILE))
        if onnx_info.get("written"):
            files[ONNX_FILE] = {"format": "ONNX; onnxruntime.InferenceSession"}
        return files, onnx_info

    def read(self, path):
        """TorchScript's own format: no Python pickle, so no arbitrary code runs on load."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            return torch.jit.load(path, map_location="cpu").eval()
