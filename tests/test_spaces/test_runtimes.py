"""The runtime registry: what a target runs in, what reads an export's file, what is refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tradeoff.spaces.runtimes import (
    DEFAULT_RUNTIME,
    PYTORCH_RUNTIME,
    RUNTIMES,
    Runtime,
    RuntimeModel,
    default_runtime,
    get_runtime,
    register_runtime,
    runtime_for_file,
)


def test_the_built_in_runtimes_and_where_they_run():
    assert list(RUNTIMES) == ["onnxruntime", "openvino", "torchscript"]
    assert default_runtime("cpu") == DEFAULT_RUNTIME == "onnxruntime"
    assert default_runtime("cuda:0") == PYTORCH_RUNTIME == "torchscript"
    assert [n for n, r in RUNTIMES.items() if r.runs_on("cuda")] == ["torchscript"]
    assert runtime_for_file("model.onnx").name == "onnxruntime"
    assert runtime_for_file("model.pt").name == "torchscript"
    with pytest.raises(ValueError, match="no registered runtime reads 'model.bin'"):
        runtime_for_file("model.bin")
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt': choose one of onnxruntime, openvino"):
        get_runtime("tensorrt")


def test_a_runtime_needs_a_name_of_its_own_and_a_device():
    with pytest.raises(ValueError, match="already registered"):

        @register_runtime
        class Again(Runtime):
            name = "onnxruntime"

    with pytest.raises(ValueError, match="names no device"):

        @register_runtime
        class Nowhere(Runtime):
            name = "nowhere"
            devices = ()

    assert "nowhere" not in RUNTIMES


def test_an_onnx_model_runs_only_in_a_runtime_that_runs_onnx():
    with pytest.raises(ValueError, match="'torchscript' does not run ONNX files"):
        RuntimeModel(b"", "torchscript")


def test_an_onnx_model_deployed_in_the_other_onnx_runtime_keeps_its_file_and_form():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    x = torch.randn(1, 1, 8, 8)
    ort_model = get_runtime("onnxruntime").deploy(net, x)
    assert (
        isinstance(ort_model, RuntimeModel) and get_runtime("onnxruntime").deploy(ort_model, x) is ort_model
    )
    ort_model.weight_bits, ort_model.int8_kernels = 8, False
    ov = get_runtime("openvino").deploy(ort_model, x)
    assert (ov.runtime, ov.onnx, ov.weight_bits, ov.int8_kernels) == ("openvino", ort_model.onnx, 8, False)
    kept = get_runtime("onnxruntime").kept(ort_model)
    assert kept is not None and kept[0] == ort_model.onnx and kept[1] == "model.onnx"
    assert get_runtime("onnxruntime").kept(net) is None  # a float network keeps its float weights
    assert get_runtime("torchscript").kept(net) is None
