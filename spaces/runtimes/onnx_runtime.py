"""ONNX Runtime on the CPU: the default runtime."""

from __future__ import annotations

from tradeoff.spaces.runtimes import register_runtime
from tradeoff.spaces.runtimes.onnx import OnnxRuntimeBase


@register_runtime
class OnnxRuntime(OnnxRuntimeBase):
    name = "onnxruntime"
    distribution = "onnxruntime"
    module = "onnxruntime"
    install = "ONNX Runtime is not installed: pip install onnxruntime"

    def session(self, onnx, *, threads, int8_kernels):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        so.add_session_config_entry("session.set_denormal_as_zero", "1")
        if not int8_kernels:  # fold DequantizeLinear(int8 weight) into a float weight once
            so.add_session_config_entry("session.disable_quant_qdq", "1")
        session = ort.InferenceSession(onnx, so, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"input": x})[0]
