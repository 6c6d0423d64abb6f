"""What the ONNX runtimes share: the export to ONNX, the module that runs an ONNX file in a
runtime's session, and the base class of a runtime that runs ONNX (ONNX Runtime's int8 tool,
the measured file written by ``tradeoff export``, the quantized file kept per trial)."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from tradeoff.spaces.runtimes import Runtime, get_runtime

ONNX_OPSET = 17
ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.pt"


@torch.no_grad()
def onnx_bytes(model: nn.Module, example_input: torch.Tensor) -> bytes:
    """``model`` as ONNX (opset 17, dynamic batch, batch-norm folded by the exporter's constant
    folding). Uses the TorchScript-based exporter: it folds eval-mode batch-norm and covers the
    torchvision models the dynamo exporter still rejects some of."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (example_input,),
            buf,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    return buf.getvalue()


class RuntimeModel(nn.Module):
    """A model held as ONNX bytes and run in an ONNX runtime's session on the CPU. ``forward``
    takes and returns torch tensors, so accuracy, latency and energy code call it like any
    module. The session is made on first use with ``torch.get_num_threads()`` threads (the
    worker's share of the cores) and denormals flushed; it is not copied or pickled."""

    def __init__(
        self,
        onnx: bytes,
        runtime: str = "onnxruntime",
        *,
        weight_bits: int = 32,
        int8_kernels: bool | None = None,
    ):
        super().__init__()
        if not isinstance(get_runtime(runtime), OnnxRuntimeBase):
            raise ValueError(f"`runtime` {runtime!r} does not run ONNX files.")
        self.onnx, self.runtime, self.weight_bits = onnx, runtime, weight_bits
        # whether activations are quantized too (QDQ around them: int8 kernels), or only the
        # weights are stored in int8 and folded into float weights when the session loads
        self.int8_kernels = weight_bits <= 8 if int8_kernels is None else int8_kernels
        self.form_note = ""
        self._run = None
        self.threads = 0

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_run"] = None
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._run is None:
            self.threads = max(1, torch.get_num_threads())
            runtime = get_runtime(self.runtime)
            self._run = runtime.session(self.onnx, threads=self.threads, int8_kernels=self.int8_kernels)
        return torch.from_numpy(self._run(np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)))

    def describe(self) -> str:
        return (
            f"{get_runtime(self.runtime).version()}, CPU, {self.threads or torch.get_num_threads()} threads"
        )


class OnnxRuntimeBase(Runtime):
    """A runtime that runs ONNX files on the CPU: subclasses implement ``session``. Int8 is made
    by ONNX Runtime's tool (:func:`~.onnx_quantization.quantize_onnx`); ``tradeoff export``
    writes the measured file, and a float network's TorchScript twin beside it."""

    file = ONNX_FILE

    def session(self, onnx: bytes, *, threads: int, int8_kernels: bool) -> Callable[[np.ndarray], np.ndarray]:
        """A function running ``onnx`` on a float32 batch with ``threads`` threads (denormals
        flushed); ``int8_kernels`` False: int8 weights folded into float weights on load."""
        raise NotImplementedError

    def deploy(self, model: nn.Module, example_input: torch.Tensor) -> nn.Module:
        if isinstance(model, RuntimeModel):  # quantized for an ONNX runtime: the same file here
            if model.runtime == self.name:
                return model
            return RuntimeModel(
                model.onnx, self.name, weight_bits=model.weight_bits, int8_kernels=model.int8_kernels
            )
        return RuntimeModel(onnx_bytes(model, example_input), self.name)

    def quantize(
        self, model: nn.Module, bits: int | Mapping[str, int], ctx: Any, skipped: list[str]
    ) -> nn.Module:
        from tradeoff.spaces._base import PlanError
        from tradeoff.spaces.runtimes.onnx_quantization import quantize_onnx

        if not ctx.calibration:
            raise PlanError("quantization needs calibration inputs; none were given")
        try:
            return quantize_onnx(
                model, bits, ctx.example_input, ctx.calibration, self.name, form=ctx.int8_form
            )
        except Exception as e:  # noqa: BLE001 - the exporter or the quantizer rejects the model
            what = f"{bits}-bit" if isinstance(bits, int) else "mixed-precision"
            raise PlanError(f"{what} quantization in {self.name} failed: {type(e).__name__}: {e}") from e

    def describe(self, deployed: nn.Module, device: str) -> str:
        describe = getattr(deployed, "describe", None)
        return describe() if describe is not None else super().describe(deployed, device)

    def write(self, deployed, model, example_input, test_x, folder):
        from tradeoff.spaces.runtimes.torchscript import traced

        with open(os.path.join(folder, ONNX_FILE), "wb") as f:
            f.write(deployed.onnx)
        form = getattr(model, "form_note", "")
        kind = f"int8 weights ({form.split(':')[0].split(' (')[0]})" if form else "float"
        if form and not model.int8_kernels:
            kind += "; measured with session option session.disable_quant_qdq=1 (folds them once)"
        files = {ONNX_FILE: {"format": f"ONNX, {kind}; onnxruntime.InferenceSession or OpenVINO"}}
        if not isinstance(model, RuntimeModel):  # a float network: its TorchScript twin
            torch.jit.save(traced(model, example_input), os.path.join(folder, TORCHSCRIPT_FILE))
            files[TORCHSCRIPT_FILE] = {
                "format": "TorchScript (traced, frozen) twin of model.onnx; torch.jit.load"
            }
        return files, {"written": True, "opset": ONNX_OPSET, "measured": True}

    def read(self, path: str) -> nn.Module:
        """The ONNX file at ``path`` (refused when a tensor lives in an external data file: a
        path inside an export must never make us read a file outside it)."""
        import onnx

        with open(path, "rb") as f:
            data = f.read()
        proto = onnx.load_from_string(data)
        tensors = list(proto.graph.initializer) + [
            a.t for n in proto.graph.node for a in n.attribute if a.HasField("t")
        ]
        if any(t.data_location == onnx.TensorProto.EXTERNAL or t.external_data for t in tensors):
            raise ExternalData(f"{path} keeps tensors in external files; tradeoff never writes such exports")
        return RuntimeModel(data, self.name)

    def from_kept(self, data, *, weight_bits, int8_kernels, form_note):
        model = RuntimeModel(data, self.name, weight_bits=weight_bits, int8_kernels=int8_kernels)
        model.form_note = form_note
        return model

    def kept(self, model):
        if not isinstance(model, RuntimeModel):
            return None
        return model.onnx, ONNX_FILE, {"quantized": True, "form_note": model.form_note}


class ExternalData(ValueError):
    """An ONNX file that points at tensors in other files."""


@torch.no_grad()
def onnx_twin(model: nn.Module, example: torch.Tensor, test_x: torch.Tensor, reference, path: str) -> dict:
    """Write ``model`` as ONNX (dynamic batch) to ``path`` and compare its top-1 in ONNX Runtime
    with ``reference``'s on ``test_x``; a model that does not export cleanly, or disagrees, gets
    the reason instead (and no file)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"written": False, "reason": "onnxruntime is not installed"}
    try:
        with open(path, "wb") as f:
            f.write(onnx_bytes(model, example))
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        ours = session.run(None, {"input": test_x.numpy()})[0].argmax(1)
    except Exception as e:  # noqa: BLE001 - any exporter or runtime failure means "not offered"
        if os.path.exists(path):
            os.remove(path)
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        return {"written": False, "reason": f"{type(e).__name__}: {reason}"}
    theirs = reference(test_x).argmax(1).numpy()
    mismatches = int((ours != theirs).sum())
    if mismatches:
        os.remove(path)
        return {
            "written": False,
            "reason": f"onnxruntime's top-1 differs from PyTorch's on {mismatches} of {len(theirs)} "
            "test images",
        }
    return {"written": True, "opset": ONNX_OPSET, "top1_mismatches_test": 0, "checked_images": len(theirs)}
