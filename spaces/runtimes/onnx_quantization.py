"""Int8 for the ONNX runtimes, made by ONNX Runtime's own tool.

ONNX Runtime's ``quantize_static`` writes QDQ with unsigned activations (``QUInt8``: the form its
x86 kernels fuse into QLinearConv; signed activations leave most convolutions in float) and
symmetric per-channel int8 weights, calibrated on training images; OpenVINO reads the same QDQ
file and runs it on its int8 kernels. Below 8 bits the weights of that file are re-quantized per
channel to the ``2^(b-1)-1`` symmetric levels of b bits (exact b-bit values, stored in int8 and
run on the int8 kernels: emulated in time, packed in size, see ``search.trial.measure.size``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from tradeoff.spaces.runtimes.onnx import RuntimeModel, onnx_bytes

# ONNX metadata key of a mixed-precision file: {weight initializer: bits}, read by the size count
LAYER_BITS_KEY = "tradeoff.weight_bits"
WEIGHT_OPS = ("Conv", "Gemm", "MatMul")


class _Calibration:
    """onnxruntime's CalibrationDataReader over a few batches of training inputs."""

    def __init__(self, batches: Sequence[torch.Tensor]):
        self._it = iter([{"input": b.detach().cpu().numpy().astype(np.float32)} for b in batches])

    def get_next(self):
        return next(self._it, None)


def quantize_onnx(
    model: nn.Module,
    bits: int | Mapping[str, int],
    example_input: torch.Tensor,
    calibration: Sequence[torch.Tensor],
    runtime: str,
    *,
    form: str = "auto",
) -> RuntimeModel:
    """Int8 of float ``model`` for ONNX Runtime or OpenVINO, in the faster of two forms (timed
    here, interleaved, on ``example_input``: int8 kernels only where their time ratio's 95 %
    interval lies below 1, else the float kernels' latency is the safe one; ``form`` =
    ``kernels`` or ``weights`` takes that one without timing, as a rebuild of a measured trial
    does):

    - int8 kernels: ONNX Runtime's static quantization (QDQ, unsigned activations, symmetric
      per-channel int8 weights, min-max calibration on ``calibration``), which the runtime
      fuses into QLinearConv/QGemm;
    - int8 weights, float kernels: the same per-channel int8 weights behind DequantizeLinear,
      folded into float weights when the session loads. On the smallest networks (a few
      million MACs) quantizing activations costs more than the integer arithmetic saves
      (BENCHMARKS.md, "Latency in the runtime people deploy"), so the file keeps int8 weights
      (its size) and runs float kernels.

    Below 8 bits the weights are re-quantized to b-bit levels (:func:`restrict_weights`).

    ``bits`` per layer (a mapping from layer group to bits, see ``spaces.value_for``; layers it
    does not cover stay float): each conv/linear node of the file is matched to its module
    (:func:`onnx_module_names`); 32-bit layers are left out of the quantizer
    (``nodes_to_exclude``), so they run float kernels with the quantize/dequantize steps around
    them, int8 layers run int8 kernels, and sub-8-bit layers are re-quantized to their own levels.
    The file records each quantized weight's bits (metadata ``tradeoff.weight_bits``): the size
    count reads it."""
    import onnx

    from tradeoff.spaces.timing import BLOCK, paired_latency

    protos = {}
    names = {n for n, _ in model.named_modules()}
    with tempfile.TemporaryDirectory() as d:
        float_onnx, pre = onnx_bytes(model, example_input), os.path.join(d, "pre.onnx")
        pre_process(float_onnx, d, pre)
        bits_of = _bits_of_nodes(onnx.load(pre), bits, names)
        excluded = [name for name, b in bits_of.items() if b > 8]
        if len(excluded) == len(bits_of):  # every layer float: nothing to quantize
            return RuntimeModel(float_onnx, runtime, weight_bits=32, int8_kernels=False)
        if form != "weights":  # the weights form needs no calibration
            protos["kernels"] = quantize_static_qdq(calibration, d, pre, excluded)
        if form != "kernels":
            protos["weights"] = quantize_weights(onnx.load(pre), skip=excluded)
    low = max((b for b in bits_of.values() if b <= 8), default=8)
    mixed = not isinstance(bits, int)
    models = {}
    for kind, proto in protos.items():
        restrict_weights(proto, lambda node: bits_of.get(node, 8))
        if mixed:
            _record_layer_bits(proto, bits_of)
        models[kind] = RuntimeModel(
            proto.SerializeToString(), runtime, weight_bits=low, int8_kernels=kind == "kernels"
        )
    if form in models:
        chosen = models[form]
        chosen.form_note = f"{_FORM_TEXT[form]} (the form the trial measured)"
        return chosen
    p = paired_latency(models["kernels"], models["weights"], example_input, warmup=3, repeats=12 * BLOCK)
    kind = "kernels" if p["ratio_hi"] < 1.0 else "weights"  # int8 kernels only where faster beyond noise
    chosen = models[kind]
    chosen.form_note = (
        f"{_FORM_TEXT[kind]}: int8 kernels ran x{p['ratio']:.2f} [{p['ratio_lo']:.2f}, "
        f"{p['ratio_hi']:.2f}] the time of float kernels with the same int8 weights when quantized"
    )
    return chosen


_FORM_TEXT = {"kernels": "int8 kernels", "weights": "int8 weights on float kernels"}


@contextlib.contextmanager
def _quiet():
    """The quantizer's advice and warnings, printed on every call through the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def pre_process(float_onnx: bytes, d: str, pre: str) -> None:
    """Shape inference and ONNX Runtime's basic graph optimisations, written to ``pre``: without
    them the quantizer leaves 16 of resnet18's 20 convolutions at 224 px in float (DQ -> Conv ->
    Q, 1.1x slower than fp32); with them all 20 fuse into QLinearConv (3.5x faster)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    raw = os.path.join(d, "float.onnx")
    with open(raw, "wb") as f:
        f.write(float_onnx)
    with _quiet():
        quant_pre_process(raw, pre, skip_symbolic_shape=False)


def quantize_static_qdq(calibration, d: str, pre: str, excluded: Sequence[str] = ()):
    """ONNX Runtime's static QDQ quantization of the pre-processed file ``pre``; the nodes named
    in ``excluded`` stay float."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    reader = type("Reader", (_Calibration, CalibrationDataReader), {})(calibration)
    dst = os.path.join(d, "int8.onnx")
    with _quiet():
        quantize_static(
            pre,
            dst,
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=list(excluded),
            extra_options={"WeightSymmetric": True},
        )
    return onnx.load(dst)


def onnx_module_names(proto, names: set[str]) -> dict[str, str]:
    """{node name: module name} for the conv/linear nodes of a file exported from a model whose
    module names are ``names``. The exporter names a node by its scope, one segment per module
    level, each segment relative to some ancestor (``/layer2/layer2.0/downsample/downsample.0/
    Conv``); each segment is resolved against the longest ancestor that makes a real module name.
    A node that resolves to no module is left out."""
    out = {}
    for node in proto.graph.node:
        if node.op_type not in WEIGHT_OPS or not node.name.startswith("/"):
            continue
        current = ""
        for segment in node.name.strip("/").split("/")[:-1]:
            parts = current.split(".") if current else []
            for cut in range(len(parts), -1, -1):
                candidate = ".".join([*parts[:cut], segment])
                if candidate in names:
                    current = candidate
                    break
            else:
                current = None
                break
        if current:
            out[node.name] = current
    return out


def _bits_of_nodes(proto, bits, names: set[str]) -> dict[str, int]:
    """{conv/linear node: bits} for the weight-carrying nodes of ``proto``."""
    from tradeoff.spaces._base import value_for

    modules = onnx_module_names(proto, names) if not isinstance(bits, int) else {}
    inits = {i.name for i in proto.graph.initializer}
    out = {}
    for node in proto.graph.node:
        if node.op_type in WEIGHT_OPS and len(node.input) > 1 and node.input[1] in inits:
            if isinstance(bits, int):
                out[node.name] = bits
            else:
                module = modules.get(node.name)
                out[node.name] = int(value_for(bits, module, 32)) if module else 32
    return out


def _record_layer_bits(proto, bits_of: Mapping[str, int]) -> None:
    """Write {weight initializer: bits} of the quantized layers into the file's metadata."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    weights = set(weight_initializers(proto))
    table = {}
    for node in proto.graph.node:
        if node.name in bits_of and len(node.input) > 1:
            dq = producer.get(node.input[1])
            if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in weights:
                table[dq.input[0]] = int(bits_of[node.name])
    entry = proto.metadata_props.add()
    entry.key, entry.value = LAYER_BITS_KEY, json.dumps(table, sort_keys=True)


def layer_bits_of(proto) -> dict[str, int] | None:
    """The {weight initializer: bits} a mixed-precision file records (None: one bit-width)."""
    for entry in proto.metadata_props:
        if entry.key == LAYER_BITS_KEY:
            return {k: int(v) for k, v in json.loads(entry.value).items()}
    return None


def quantize_weights(proto, *, skip: Sequence[str] = ()):
    """``proto`` (float) with the weight of every Conv, Gemm and MatMul (but the nodes named in
    ``skip``) stored as symmetric per-channel int8 behind a DequantizeLinear (activations stay
    float), in place; returns it."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    nodes = []
    for node in proto.graph.node:
        if node.op_type in WEIGHT_OPS and len(node.input) > 1 and node.input[1] in inits:
            if node.name in skip:
                continue
            init = inits[node.input[1]]
            w = numpy_helper.to_array(init).astype(np.float32)
            if w.ndim < 2:
                continue
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            # the output-channel axis: Conv (out, in, k, k), Gemm with transB (out, in), else (in, out)
            axis = 0 if node.op_type == "Conv" or (node.op_type == "Gemm" and trans_b) else w.ndim - 1
            reduce = tuple(i for i in range(w.ndim) if i != axis)
            scale = np.abs(w).max(axis=reduce) / 127.0
            scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
            shape = [1] * w.ndim
            shape[axis] = -1
            q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
            name = node.input[1]
            init.CopyFrom(numpy_helper.from_array(q, name + "_quantized"))
            proto.graph.initializer.append(numpy_helper.from_array(scale, name + "_scale"))
            proto.graph.initializer.append(
                numpy_helper.from_array(np.zeros_like(q, shape=scale.shape), name + "_zp")
            )
            nodes.append(
                helper.make_node(
                    "DequantizeLinear",
                    [name + "_quantized", name + "_scale", name + "_zp"],
                    [name],
                    name=name + "_DequantizeLinear",
                    axis=axis,
                )
            )
    for n in reversed(nodes):  # before every node: a valid topological order
        proto.graph.node.insert(0, n)
    return proto


def weight_initializers(proto) -> list[str]:
    """Names of the quantized weight tensors of a QDQ model: int8 initializers of two or more
    dimensions that a DequantizeLinear reads."""
    inits = {i.name: i for i in proto.graph.initializer}
    out = []
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            init = inits[node.input[0]]
            if init.data_type == 3 and len(init.dims) >= 2:  # INT8
                out.append(node.input[0])
    return out


def restrict_weights(proto, bits: int | Callable[[str], int]) -> None:
    """Re-quantize every int8 weight of a QDQ model to the symmetric ``2^(bits-1)-1`` levels of
    ``bits`` bits (or of ``bits(node name)`` bits, per layer; 8 and above: left as it is), per
    output channel (scale = the channel's largest magnitude / levels), in place: the values stay
    int8 for the kernels and are exact b-bit integers. An int32 bias whose scale is the input's
    times the weight's (what QLinearConv needs to fuse) is re-quantized on the new weight scale."""
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    weights = set(weight_initializers(proto))
    for node in proto.graph.node:
        if node.op_type not in WEIGHT_OPS or len(node.input) < 2:
            continue
        node_bits = bits(node.name) if callable(bits) else bits
        if node_bits >= 8:
            continue
        levels = 2 ** (node_bits - 1) - 1
        dq = producer.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in weights:
            continue
        q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float32)
        scale_init = inits[dq.input[1]]
        scale = numpy_helper.to_array(scale_init).astype(np.float32)
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        if scale.ndim == 1:
            shape[axis] = -1
        w = q * scale.reshape(shape)
        reduce = tuple(i for i in range(q.ndim) if scale.ndim == 0 or i != axis)
        peak = np.abs(w).max(axis=reduce, keepdims=True)
        new_scale = np.where(peak > 0, peak / levels, 1.0).astype(np.float32)
        new_q = np.clip(np.round(w / new_scale), -levels, levels).astype(np.int8)
        inits[dq.input[0]].CopyFrom(numpy_helper.from_array(new_q, dq.input[0]))
        new_scale = new_scale.reshape(scale.shape)
        scale_init.CopyFrom(numpy_helper.from_array(new_scale, dq.input[1]))
        bias_dq = producer.get(node.input[2]) if len(node.input) > 2 else None
        x_dq = producer.get(node.input[0])
        if bias_dq is None or bias_dq.op_type != "DequantizeLinear" or x_dq is None:
            continue
        if x_dq.op_type != "DequantizeLinear" or x_dq.input[1] not in inits:
            continue
        bias_init, bias_scale_init = inits[bias_dq.input[0]], inits[bias_dq.input[1]]
        bias = numpy_helper.to_array(bias_init).astype(np.float64) * numpy_helper.to_array(bias_scale_init)
        x_scale = float(numpy_helper.to_array(inits[x_dq.input[1]]))
        bias_scale = (x_scale * new_scale.astype(np.float64)).astype(np.float32)
        bias_q = np.round(bias / np.where(bias_scale > 0, bias_scale, 1.0)).astype(np.int32)
        bias_init.CopyFrom(numpy_helper.from_array(bias_q, bias_dq.input[0]))
        bias_scale_init.CopyFrom(numpy_helper.from_array(bias_scale, bias_dq.input[1]))
