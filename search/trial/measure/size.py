"""Parameters and bytes on disk: what the model stores."""

from __future__ import annotations

import io

import numpy as np
import torch
from torch import nn

from tradeoff.search.trial.figures import Figure, register_figure
from tradeoff.search.trial.measure.probe import Probe

SIZE_METHOD = "bytes of torch.save(state_dict)"


def count_params(model: nn.Module, *, sparse: bool = False) -> int:
    """Parameters stored by the model; with ``sparse``, only the non-zero ones."""
    if sparse:
        return int(sum(int(torch.count_nonzero(p)) for p in model.parameters()))
    return int(sum(p.numel() for p in model.parameters()))


def serialized_size(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def named_weight_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(module name, weight tensor) of every conv and linear layer, float or quantized."""
    out = []
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if callable(w) and not isinstance(w, torch.Tensor):  # quantized modules: weight()
            try:
                w = w()
            except Exception:  # noqa: BLE001
                continue
        if isinstance(w, torch.Tensor) and w.dim() >= 2:
            out.append((name, w))
    return out


def weight_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The weight tensor of every conv and linear layer, float or quantized."""
    return [w for _, w in named_weight_tensors(model)]


def _values(w: torch.Tensor) -> torch.Tensor:
    return w.int_repr() if w.is_quantized else w.detach()


def encoded_size(
    model: nn.Module, *, weight_bits: int = 32, sparse: bool = False, layer_bits: dict[str, int] | None = None
) -> tuple[int, str]:
    """(bytes, method): the serialized state dict, with every conv/linear weight re-counted at
    ``weight_bits`` bits packed (per layer: at ``layer_bits`` of its module) and, for sparse
    weights, as a bitmap of positions plus the non-zero values. Without either, the serialized
    size as it is."""
    size = serialized_size(model)
    if weight_bits >= 8 and not sparse and not layer_bits:
        return size, SIZE_METHOD
    arrays = []
    for name, w in named_weight_tensors(model):
        v = _values(w)
        bits = (layer_bits or {}).get(name, weight_bits)
        arrays.append((v.numel(), v.element_size(), int(torch.count_nonzero(v)) if sparse else 0, bits))
    return _recounted(
        size, arrays, SIZE_METHOD, weight_bits=weight_bits, sparse=sparse, mixed=bool(layer_bits)
    )


def _recounted(
    size: int,
    weights: list[tuple[int, int, int, int]],
    method: str,
    *,
    weight_bits: int,
    sparse: bool,
    mixed=False,
) -> tuple[int, str]:
    """``size`` with each weight tensor (values, bytes a value, non-zeros, bits) re-counted at
    its bits packed, and as a position bitmap plus the non-zero values if ``sparse``."""
    for numel, itemsize, nonzero, stored_bits in weights:
        bits = min(stored_bits, itemsize * 8)
        encoded = (nonzero * bits + numel + 7) // 8 if sparse else (numel * bits + 7) // 8
        size += encoded - numel * itemsize
    parts = [method]
    if mixed:
        counts: dict[int, int] = {}
        for _, _, _, b in weights:
            counts[b] = counts.get(b, 0) + 1
        text = " ".join(f"{b}x{n}" for b, n in sorted(counts.items(), key=lambda kv: -kv[0]))
        parts.append(f"mixed precision: each conv/linear weight counted at its own bits packed ({text})")
    elif weight_bits < 8:
        parts.append(f"conv/linear weights counted at {weight_bits} bits packed (scales as stored)")
    if sparse:
        parts.append("sparse weights as a 1-bit position bitmap plus the non-zero values")
    return size, "; ".join(parts)


ONNX_SIZE_METHOD = "bytes of the ONNX file the runtime loads"


def onnx_encoded_size(onnx: bytes, *, weight_bits: int = 32, sparse: bool = False) -> tuple[int, str]:
    """(bytes, method): the ONNX file as the runtime loads it, with every weight (initializers
    of two or more dimensions: conv and linear kernels, float or int8) re-counted at
    ``weight_bits`` bits packed and, for sparse weights, as a bitmap of positions plus the
    non-zero values."""
    import onnx as onnx_lib
    from onnx import numpy_helper

    from tradeoff.spaces.runtimes.onnx_quantization import LAYER_BITS_KEY, layer_bits_of

    size = len(onnx)
    needs_proto = weight_bits < 8 or sparse or LAYER_BITS_KEY.encode() in onnx
    proto = onnx_lib.load_from_string(onnx) if needs_proto else None
    per_layer = layer_bits_of(proto) if proto is not None else None
    if weight_bits >= 8 and not sparse and not per_layer:
        return size, ONNX_SIZE_METHOD
    weights = []
    for init in proto.graph.initializer:
        if len(init.dims) >= 2:
            v = numpy_helper.to_array(init)
            # a mixed-precision file: its own bits for each quantized weight, float ones as stored
            bits = per_layer.get(init.name, v.itemsize * 8) if per_layer else weight_bits
            weights.append((v.size, v.itemsize, int(np.count_nonzero(v)) if sparse else 0, bits))
    return _recounted(
        len(onnx), weights, ONNX_SIZE_METHOD, weight_bits=weight_bits, sparse=sparse, mixed=bool(per_layer)
    )


def _params(probe: Probe) -> tuple[int, dict]:
    return count_params(probe.float_model, sparse=probe.sparse), {}


def _size(probe: Probe) -> tuple[int, dict]:
    onnx = getattr(probe.deployed, "onnx", None)
    if onnx is not None:  # what ONNX Runtime or OpenVINO loads
        size, method = onnx_encoded_size(onnx, weight_bits=probe.weight_bits, sparse=probe.sparse)
        return size, {"size_method": method}
    size, method = encoded_size(
        probe.model, weight_bits=probe.weight_bits, sparse=probe.sparse, layer_bits=probe.layer_bits
    )
    return size, {"size_method": method}


register_figure(
    Figure(
        needs_training=False,
        name="params",
        unit="count",
        direction="minimize",
        label="parameters (M)",
        short="params",
        measure=_params,
        method="parameters of the float model (non-zero ones for sparse weights)",
        weight="params",
        constraint="max_params",
        scale=1e-6,
        integer=True,
    )
)
register_figure(
    Figure(
        needs_training=False,
        name="size_bytes",
        unit="bytes",
        direction="minimize",
        label="size (MB)",
        short="size",
        measure=_size,
        method="bytes of the deployed file (ONNX; TorchScript runtime: torch.save(state_dict)), "
        "sub-8-bit and sparse weights counted as encoded",
        weight="size",
        constraint="max_size_mb",
        constraint_unit=" MB",
        constraint_scale=1e6,
        scale=1e-6,
        details=("size_method",),
        integer=True,
    )
)
