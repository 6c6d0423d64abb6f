from __future__ import annotations

import pytest
import torch
from torch import nn

from tradeoff.search.trial.measure import encoded_size, serialized_size, weight_tensors
from tradeoff.spaces import ApplyContext, Plan, apply_plan


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(8, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    ).eval()


def quantized(bits: int, model=None):
    x = torch.randn(1, 8, 8, 8)
    ctx = ApplyContext(
        example_input=x, num_classes=10, calibration=[torch.randn(16, 8, 8, 8) for _ in range(4)]
    )
    return apply_plan(model or conv_net(), Plan(weight_bits=bits), ctx), x


def test_int8_runs_on_quantized_kernels_and_is_a_quarter_of_the_size():
    c, x = quantized(8)
    assert any("quantized" in type(m).__module__ for m in c.model.modules())
    float_size = serialized_size(c.float_model)
    size, _ = encoded_size(c.model, weight_bits=8)
    assert 0.24 < size / float_size < 0.32  # int8 weights, fp32 biases/scales, pickle framing
    torch.testing.assert_close(c.model(x).argmax(1), c.float_model(x).argmax(1))


def test_4_bit_weights_take_an_eighth_plus_scales():
    c, _ = quantized(4)
    float_size = serialized_size(c.float_model)
    size, method = encoded_size(c.model, weight_bits=4)
    assert 0.12 < size / float_size < 0.20
    assert "4 bits packed" in method


@pytest.mark.parametrize("bits", [2, 4])
def test_low_bit_weights_use_only_their_levels(bits):
    c, _ = quantized(bits)
    levels = 2 ** (bits - 1) - 1
    for w in weight_tensors(c.model):
        q = w.int_repr()
        assert int(q.abs().max()) <= levels
        for row in q.flatten(1):
            assert len(torch.unique(row)) <= 2 * levels + 1


def test_quantization_comes_last_and_keeps_the_float_model():
    c, _ = quantized(8)
    assert all(p.dtype == torch.float32 for p in c.float_model.parameters())
    assert c.weight_bits == 8


def test_sparse_encoding_counts_non_zeros_and_a_bitmap():
    lin = nn.Linear(100, 100, bias=False)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[:10] = 1.0  # 1,000 non-zeros of 10,000
    dense = serialized_size(lin)
    sparse, method = encoded_size(lin, sparse=True)
    assert sparse == dense - 40_000 + 4 * 1000 + 10_000 // 8
    assert "bitmap" in method


# -- in ONNX Runtime (the default runtime) and OpenVINO ---------------------------------------


def quantized_onnx(bits: int, runtime: str = "onnxruntime"):
    x = torch.randn(1, 8, 8, 8)
    ctx = ApplyContext(
        example_input=x,
        num_classes=10,
        calibration=[torch.randn(16, 8, 8, 8) for _ in range(4)],
        runtime=runtime,
    )
    return apply_plan(conv_net(), Plan(weight_bits=bits), ctx), x


def _optimized_ops(onnx_bytes: bytes, tmp_path, **config: str) -> list[str]:
    """The operators ONNX Runtime runs after its graph optimisations (what its kernels fuse)."""
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    for key, value in config.items():
        so.add_session_config_entry(key.replace("__", "."), value)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]


def test_int8_in_onnxruntime_fuses_every_layer_into_int8_kernels(tmp_path):
    """Unsigned activations and per-channel weights: ONNX Runtime turns every conv and the
    linear layer into its int8 kernels (signed activations would leave convolutions in float)."""
    from tradeoff.search.trial.measure import RuntimeModel, onnx_encoded_size
    from tradeoff.spaces.runtimes import onnx_bytes
    from tradeoff.spaces.runtimes.onnx_quantization import pre_process, quantize_static_qdq

    net, x = conv_net(), torch.randn(1, 8, 8, 8)
    pre_process(onnx_bytes(net, x), str(tmp_path), str(tmp_path / "p.onnx"))
    proto = quantize_static_qdq([torch.randn(16, 8, 8, 8)], str(tmp_path), str(tmp_path / "p.onnx"))
    ops = _optimized_ops(proto.SerializeToString(), tmp_path)
    assert ops.count("QLinearConv") == 2 and "Conv" not in ops
    assert "QGemm" in ops or "QLinearMatMul" in ops or "MatMulInteger" in ops
    model = RuntimeModel(proto.SerializeToString(), "onnxruntime", weight_bits=8)
    torch.testing.assert_close(model(x).argmax(1), net(x).argmax(1))
    float_size, _ = onnx_encoded_size(onnx_bytes(net, x))
    size, _ = onnx_encoded_size(model.onnx, weight_bits=8)
    assert 0.24 < size / float_size < 0.32


def test_int8_keeps_the_faster_of_int8_kernels_and_int8_weights_on_float_kernels(tmp_path):
    """Both forms store int8 weights (the same size within the activations' scales); the one
    kept says which it is and how the two compared; weight-only int8 runs float kernels on the
    folded weights, so its outputs are the float network's with weights rounded to int8."""
    import onnx

    from tradeoff.spaces.runtimes import RuntimeModel, onnx_bytes
    from tradeoff.spaces.runtimes.onnx_quantization import quantize_weights

    c, x = quantized_onnx(8)
    assert c.model.form_note.startswith(("int8 kernels", "int8 weights on float kernels"))
    assert c.model.int8_kernels == c.model.form_note.startswith("int8 kernels")
    weight_only = RuntimeModel(
        quantize_weights(onnx.load_from_string(onnx_bytes(c.float_model, x))).SerializeToString(),
        "onnxruntime",
        weight_bits=8,
        int8_kernels=False,
    )
    # the session RuntimeModel makes for it folds each DequantizeLinear into a float weight
    ops = _optimized_ops(weight_only.onnx, tmp_path, session__disable_quant_qdq="1")
    assert "DequantizeLinear" not in ops and "QLinearConv" not in ops
    assert ops.count("Conv") + ops.count("FusedConv") == 2
    batch = torch.randn(32, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(weight_only(batch), c.float_model(batch), atol=0.05, rtol=0.05)
    float_size = len(onnx_bytes(c.float_model, x))
    assert 0.24 < len(weight_only.onnx) / float_size < 0.32 and 0.24 < len(c.model.onnx) / float_size < 0.32


def _float_onnx(model, x) -> bytes:
    from tradeoff.spaces.runtimes import onnx_bytes

    return onnx_bytes(model, x)


@pytest.mark.parametrize("bits", [2, 4])
def test_low_bit_weights_in_onnx_are_exact_levels_counted_packed(bits):
    import onnx
    from onnx import numpy_helper

    from tradeoff.search.trial.measure import onnx_encoded_size
    from tradeoff.spaces.runtimes.onnx_quantization import weight_initializers

    c, x = quantized_onnx(bits)
    proto = onnx.load_from_string(c.model.onnx)
    names = weight_initializers(proto)
    assert len(names) == 3  # two convolutions and the linear layer
    levels = 2 ** (bits - 1) - 1
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for name in names:
        q = inits[name]
        assert q.dtype.name == "int8" and int(abs(q.astype(int)).max()) == levels
    # the size: the file with each int8 weight re-counted at `bits` bits
    size, method = onnx_encoded_size(c.model.onnx, weight_bits=bits)
    packed = sum(inits[n].size - (inits[n].size * bits + 7) // 8 for n in names)
    assert size == len(c.model.onnx) - packed
    assert f"{bits} bits packed" in method
    c.model(x)  # runs


def test_int8_in_openvino_runs_the_same_qdq_file():
    pytest.importorskip("openvino")
    c, x = quantized_onnx(8, runtime="openvino")
    assert c.model.runtime == "openvino"
    from tradeoff.spaces.runtimes import RuntimeModel

    same = RuntimeModel(c.model.onnx, "onnxruntime")
    torch.testing.assert_close(c.model(x).argmax(1), same(x).argmax(1))
