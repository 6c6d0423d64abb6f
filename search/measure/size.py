"""Parameters and bytes on disk: what the model stores."""

from __future__ import annotations

import io

import numpy as np
import torch
from torch import nn

from tradeoff.search.figures import Figure, register_figure
from tradeoff.search.measure.probe import Probe

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


def weight_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The weight tensor of every conv and linear layer, float or quantized."""
    out = []
    for m in model.modules():
        w = getattr(m, "weight", None)
        if callable(w) and not isinstance(w, torch.Tensor):  # quantized modules: weight()
            try:
                w = w()
            except Exception:  # noqa: BLE001
                continue
        if isinstance(w, torch.Tensor) and w.dim() >= 2:
            out.append(w)
    return out


def _values(w: torch.Tensor) -> torch.Tensor:
    return w.int_repr() if w.is_quantized else w.detach()


def encoded_size(model: nn.Module, *, weight_bits: int = 32, sparse: bool = False) -> tuple[int, str]:
    """(bytes, method): the serialized state dict, with every conv/linear weight re-counted at
    ``weight_bits`` bits packed and, for sparse weights, as a bitmap of positions plus the
    non-zero values. Without either, the serialized size as it is."""
    size = serialized_size(model)
    if weight_bits >= 8 and not sparse:
        return size, SIZE_METHOD
    for w in weight_tensors(model):
        values = _values(w)
        stored = values.numel() * values.element_size()
        bits = min(weight_bits, values.element_size() * 8)
        if sparse:
            encoded = (int(torch.count_nonzero(values)) * bits + values.numel() + 7) // 8
        else:
            encoded = (values.numel() * bits + 7) // 8
        size += encoded - stored
    parts = [SIZE_METHOD]
    if weight_bits < 8:
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
    size = len(onnx)
    if weight_bits >= 8 and not sparse:
        return size, ONNX_SIZE_METHOD
    import onnx as onnx_lib
    from onnx import numpy_helper

    proto = onnx_lib.load_from_string(onnx)
    for init in proto.graph.initializer:
        if len(init.dims) < 2:
            continue
        values = numpy_helper.to_array(init)
        stored = values.size * values.itemsize
        bits = min(weight_bits, values.itemsize * 8)
        if sparse:
            encoded = (int(np.count_nonzero(values)) * bits + values.size + 7) // 8
        else:
            encoded = (values.size * bits + 7) // 8
        size += encoded - stored
    parts = [ONNX_SIZE_METHOD]
    if weight_bits < 8:
        parts.append(f"conv/linear weights counted at {weight_bits} bits packed (scales as stored)")
    if sparse:
        parts.append("sparse weights as a 1-bit position bitmap plus the non-zero values")
    return size, "; ".join(parts)


def _params(probe: Probe) -> tuple[int, dict]:
    return count_params(probe.float_model, sparse=probe.sparse), {}


def _size(probe: Probe) -> tuple[int, dict]:
    onnx = getattr(probe.deployed, "onnx", None)
    if onnx is not None:  # what ONNX Runtime or OpenVINO loads
        size, method = onnx_encoded_size(onnx, weight_bits=probe.weight_bits, sparse=probe.sparse)
        return size, {"size_method": method}
    size, method = encoded_size(probe.model, weight_bits=probe.weight_bits, sparse=probe.sparse)
    return size, {"size_method": method}


register_figure(
    Figure(
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
