"""Runtimes a plan is deployed, measured and exported in: a registry, as knobs and figures are.

A runtime is one class (:class:`Runtime`) in one file, registered with :func:`register_runtime`:
how it runs a model (``deploy``), how its own tool makes int8 (``quantize``), what it says about
where a latency was timed (``describe``), what ``tradeoff export`` writes (``write``) and reads
back (``read``), and whether a trial's quantized model is a file the study can keep
(``from_kept``). The built-in ones:

- ``onnxruntime`` (default) and ``openvino`` run the model as ONNX (:mod:`.onnx`; the file
  ``tradeoff export`` writes is the file that was measured), quantized by ONNX Runtime's tool
  (:mod:`.onnx_quantization`);
- ``torchscript`` runs PyTorch's traced and frozen TorchScript and PyTorch's own int8 kernels
  (:mod:`.torchscript`), the only runtime of a CUDA target.

Why ONNX Runtime by default: PyTorch's batch-1 float convolutions on small inputs take a slow
im2col path on the CPUs people deploy to (the bundled teacher: 8 ms in TorchScript, 0.46 ms in
ONNX Runtime, identical top-1), so a TorchScript latency says little about a deployed model.

A runtime of the user's own is a module passed with ``--plugin`` (as knobs and figures are)
whose class is decorated with :func:`register_runtime`.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata
from typing import Any, ClassVar

import torch
from torch import nn

RUNTIMES: dict[str, Runtime] = {}
DEFAULT_RUNTIME = "onnxruntime"
# PyTorch's own runtime: what a context that names none runs, and what studies made before
# runtimes were measured in
PYTORCH_RUNTIME = "torchscript"


class Runtime:
    """One runtime. Subclasses set the class attributes and implement ``deploy``,
    ``quantize``, ``write`` and ``read``; the rest has defaults.

    ``devices``: the device kinds it measures on (``cpu``, ``cuda``); ``distribution``: the
    package whose version a measurement records; ``module``: what must import for it to run
    (``install`` says how to get it); ``file``: the file name ``tradeoff export`` writes its
    deployed model to; ``int8_note``: what a latency's method says of its 8-bit kernels."""

    name: ClassVar[str] = ""
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    distribution: ClassVar[str] = ""
    module: ClassVar[str] = ""
    install: ClassVar[str] = ""
    file: ClassVar[str] = ""
    int8_note: ClassVar[str] = ""

    def missing(self) -> str | None:
        """None when this runtime can run here, else what to install."""
        if not self.module:
            return None
        try:
            __import__(self.module)
        except ImportError:
            return self.install or f"{self.module} is not installed"
        return None

    def version(self) -> str:
        try:
            return f"{self.name} {metadata.version(self.distribution or self.name)}"
        except metadata.PackageNotFoundError:
            return self.name

    def runs_on(self, device: str) -> bool:
        return device.split(":")[0] in self.devices

    def deploy(self, model: nn.Module, example_input: torch.Tensor) -> nn.Module:
        """``model`` in the form this runtime runs (called like a module: tensors in and out)."""
        raise NotImplementedError

    def quantize(
        self, model: nn.Module, bits: int | Mapping[str, int], ctx: Any, skipped: list[str]
    ) -> nn.Module:
        """An int8 (or b-bit-valued int8; per layer when ``bits`` maps layer groups to bits)
        copy of float ``model`` made by this runtime's own tool, calibrated on
        ``ctx.calibration`` (``ctx``: the knob's :class:`~tradeoff.spaces.ApplyContext`); a
        layer it leaves in float is said in ``skipped``. Raises ``PlanError`` when it cannot."""
        raise NotImplementedError

    def describe(self, deployed: nn.Module, device: str) -> str:
        """Where a latency of ``deployed`` was timed, for the figure's method."""
        return f"{self.version()}, {device}, {torch.get_num_threads()} threads"

    def write(
        self,
        deployed: nn.Module,
        model: nn.Module,
        example_input: torch.Tensor,
        test_x: torch.Tensor,
        folder: str,
    ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """Write the deployed model (``self.file``) and any twin into ``folder``:
        ({file name: {"format": how to load it}}, what the export record says of its ONNX file)."""
        raise NotImplementedError

    def read(self, path: str) -> nn.Module:
        """The model file this runtime writes, loaded without running code from it."""
        raise NotImplementedError

    def from_kept(
        self, data: bytes, *, weight_bits: int, int8_kernels: bool, form_note: str
    ) -> nn.Module | None:
        """A trial's kept deployed model (the bytes the runner stored), or None where this
        runtime keeps none (the model is made again from the float weights)."""
        return None

    def kept(self, model: nn.Module) -> tuple[bytes, str, dict[str, Any]] | None:
        """What of a trial's deployed ``model`` the study keeps (bytes, file name, record), or
        None (a float model: the structure's float weights are kept instead)."""
        return None


def register_runtime(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator: make the runtime selectable as ``--runtime NAME``."""
    if not cls.name or cls.name in RUNTIMES:
        raise ValueError(f"runtime name {cls.name!r} is empty or already registered.")
    if not cls.devices:
        raise ValueError(f"runtime {cls.name!r}: `devices` names no device kind.")
    RUNTIMES[cls.name] = cls()
    return cls


def get_runtime(name: str) -> Runtime:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}: choose one of {', '.join(RUNTIMES)}") from None


def default_runtime(device: str) -> str:
    """The runtime a target measures in when none is named: the default where it runs on the
    device, else the first registered one that does."""
    if get_runtime(DEFAULT_RUNTIME).runs_on(device):
        return DEFAULT_RUNTIME
    for name, runtime in RUNTIMES.items():
        if runtime.runs_on(device):
            return name
    raise ValueError(f"no registered runtime runs on {device!r}")


def runtime_for_file(file: str) -> Runtime:
    """The first registered runtime that writes (and reads) ``file``."""
    for runtime in RUNTIMES.values():
        if runtime.file == file:
            return runtime
    raise ValueError(f"no registered runtime reads {file!r}")


def deploy(model: nn.Module, runtime: str, example_input: torch.Tensor) -> nn.Module:
    """``model`` in the form ``runtime`` runs (see :meth:`Runtime.deploy`)."""
    return get_runtime(runtime).deploy(model, example_input)


def version(runtime: str) -> str:
    return get_runtime(runtime).version()


def available(runtime: str) -> str | None:
    """None when ``runtime`` can run here, else what to install."""
    return get_runtime(runtime).missing()


# the built-in runtimes, in the order `--runtime` lists them
# isort: off
from tradeoff.spaces.runtimes.onnx import ONNX_OPSET, RuntimeModel, onnx_bytes  # noqa: E402
from tradeoff.spaces.runtimes import onnx_runtime, openvino_runtime, torchscript  # noqa: E402, F401

# isort: on

__all__ = [
    "DEFAULT_RUNTIME",
    "ONNX_OPSET",
    "PYTORCH_RUNTIME",
    "RUNTIMES",
    "Runtime",
    "RuntimeModel",
    "available",
    "default_runtime",
    "deploy",
    "get_runtime",
    "onnx_bytes",
    "register_runtime",
    "runtime_for_file",
    "version",
]
