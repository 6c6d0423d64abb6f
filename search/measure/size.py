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
    weights = [_values(w) for w in weight_tensors(model)]
    arrays = [(v.numel(), v.element_size(), int(torch.count_nonzero(v)) if sparse else 0) for v in weights]
    return _recounted(size, arrays, SIZE_METHOD, weight_bits=weight_bits, sparse=sparse)


def _recounted(
    size: int, weights: list[tuple[int, int, int]], method: str, *, weight_bits: int, sparse: bool
) -> tuple[int, str]:
    """``size`` with each weight tensor (values, bytes a value, non-zeros) re-counted at
    ``weight_bits`` bits packed, and as a position bitmap plus the non-zero values if ``sparse``."""
    for numel, itemsize, nonzero in weights:
        bits = min(weight_bits, itemsize * 8)
        encoded = (nonzero * bits + numel + 7) // 8 if sparse else (numel * bits + 7) // 8
        size += encoded - numel * itemsize
    parts = [method]
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
    arrays = [numpy_helper.to_array(i) for i in proto.graph.initializer if len(i.dims) >= 2]
    weights = [(v.size, v.itemsize, int(np.count_nonzero(v)) if sparse else 0) for v in arrays]
    return _recounted(len(onnx), weights, ONNX_SIZE_METHOD, weight_bits=weight_bits, sparse=sparse)


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
