"""OpenVINO's CPU plug-in, on the same ONNX file (its int8 kernels run ONNX Runtime's QDQ)."""

from __future__ import annotations

import os
import tempfile

import numpy as np

from tradeoff.spaces.runtimes import register_runtime
from tradeoff.spaces.runtimes.onnx import OnnxRuntimeBase


@register_runtime
class OpenVINO(OnnxRuntimeBase):
    name = "openvino"
    distribution = "openvino"
    module = "openvino"
    install = "OpenVINO is not installed: pip install 'tradeoff[openvino]' (or openvino)"

    def session(self, onnx, *, threads, int8_kernels):
        import openvino as ov

        core = ov.Core()
        with tempfile.TemporaryDirectory() as d:  # read_model takes a path for ONNX
            path = os.path.join(d, "model.onnx")
            with open(path, "wb") as f:
                f.write(onnx)
            model = core.read_model(path)
        compiled = core.compile_model(
            model,
            "CPU",
            {
                # without it the CPU plug-in drops to bf16 on CPUs that have it
                "INFERENCE_PRECISION_HINT": "f32",
                "INFERENCE_NUM_THREADS": threads,
                "NUM_STREAMS": 1,
                "PERFORMANCE_HINT": "LATENCY",
            },
        )
        request = compiled.create_infer_request()
        return lambda x: np.asarray(request.infer({0: x})[0]).copy()
