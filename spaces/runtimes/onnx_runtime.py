"""ONNX Runtime on the CPU: the default runtime."""

from __future__ import annotations

from tradeoff.spaces.runtimes import register_runtime
from tradeoff.spaces.runtimes.onnx import OnnxRuntimeBase

_SPINNING = [True]  # whether sessions made from now on spin-wait between calls (ONNX Runtime's default)


def stop_spinning() -> None:
    """Sessions this process creates from now on do not spin-wait between calls, for a process
    that times many sessions side by side. Each session owns a thread pool whose threads spin
    after a call, and those of the idle sessions compete with the one being timed: four sessions
    of the same network measured 2.5-2.9 ms a call where one alone took 1.27 ms; without spinning
    all four took 1.64-1.67 ms (AMD EPYC, 2 threads, the Fashion-MNIST resnet18). ONNX Runtime's
    process-wide pool would avoid both costs, but its quantization tool makes sessions of its own
    that refuse to run beside one."""
    _SPINNING[0] = False


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
        if not _SPINNING[0]:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if not int8_kernels:  # fold DequantizeLinear(int8 weight) into a float weight once
            so.add_session_config_entry("session.disable_quant_qdq", "1")
        session = ort.InferenceSession(onnx, so, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"input": x})[0]
