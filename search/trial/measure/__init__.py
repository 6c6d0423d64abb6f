"""Measurements of one model: every registered figure, with how each was obtained.

Every figure is measured on the model in the form a user deploys it (in the study's runtime:
an ONNX Runtime or OpenVINO session on the ONNX file that ``tradeoff export`` writes, or
traced and frozen TorchScript, see ``tradeoff.spaces.runtimes``), or on its float twin where a
counter cannot follow quantized kernels (FLOPs, parameters, activations).
The figures and their measuring functions are declared in the modules of this package, one
:func:`~tradeoff.search.trial.figures.register_figure` each; :func:`measure` runs them all in
registration order. How each value was obtained is recorded beside it (``*_method``); an
energy figure that is not read from a hardware counter says ``estimated: ...``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# each import registers its figures: the order of these imports is the order of measurement
# isort: off
from tradeoff.search.trial.measure.accuracy import accuracy
from tradeoff.search.trial.measure.size import SIZE_METHOD, count_params, encoded_size, onnx_encoded_size
from tradeoff.search.trial.measure.size import serialized_size
from tradeoff.search.trial.measure.size import weight_tensors
from tradeoff.search.trial.measure.flops import FLOPS_METHOD, count_flops
from tradeoff.search.trial.measure.latency import cpu_name, latency
from tradeoff.search.trial.measure.energy import activation_elements, cache_bytes, estimated_energy_mj
from tradeoff.search.trial.measure.energy import layer_traffic, measured_energy_mj
from tradeoff.search.trial.measure.memory import peak_activation_bytes, peak_memory_bytes, weight_bytes

# isort: on
from tradeoff.search.trial.figures import FIGURES
from tradeoff.search.trial.measure.probe import Probe
from tradeoff.spaces.runtimes import DEFAULT_RUNTIME, RUNTIMES, RuntimeModel, deploy, get_runtime
from tradeoff.spaces.timing import median_interval, paired_latency

__all__ = [
    "DEFAULT_RUNTIME",
    "FLOPS_METHOD",
    "RUNTIMES",
    "SIZE_METHOD",
    "Measurement",
    "Probe",
    "RuntimeModel",
    "accuracy",
    "activation_elements",
    "cache_bytes",
    "count_flops",
    "count_params",
    "cpu_name",
    "deploy",
    "encoded_size",
    "estimated_energy_mj",
    "latency",
    "layer_traffic",
    "measure",
    "measured_energy_mj",
    "median_interval",
    "onnx_encoded_size",
    "paired_latency",
    "peak_activation_bytes",
    "peak_memory_bytes",
    "serialized_size",
    "weight_bytes",
    "weight_tensors",
]


@dataclass(frozen=True)
class Measurement:
    """Figures of one model (``figures``: one value per registered figure) and how they were
    obtained (``details``: each figure's ``*_method`` and extras such as the latency spread).
    Both are read as attributes too: ``m.accuracy``, ``m.latency_method``."""

    figures: Mapping[str, float]
    details: Mapping[str, Any]

    def __getattr__(self, name: str) -> Any:
        for part in ("figures", "details"):
            values = self.__dict__.get(part, {})
            if name in values:
                return values[name]
        raise AttributeError(name)

    def values(self, objectives: Sequence[str]) -> list[float]:
        return [float(self.figures[name]) for name in objectives]

    def to_dict(self) -> dict[str, Any]:
        """Every figure and detail, as trial user attributes."""
        return {**self.figures, **self.details}

    @staticmethod
    def keys() -> set[str]:
        """The attribute names a measurement writes (figures, their details, ``weight_bits``)."""
        return {*FIGURES, *(d for f in FIGURES.values() for d in f.details), "weight_bits"}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Measurement:
        details = cls.keys() - set(FIGURES)
        return cls(figures={k: d[k] for k in FIGURES if k in d}, details={k: d[k] for k in d if k in details})


def measure(
    model: nn.Module,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    *,
    example_input: torch.Tensor,
    device: str = "cpu",
    warmup: int = 10,
    repeats: int = 50,
    energy_seconds: float = 1.0,
    weight_bits: int = 32,
    layer_bits: dict[str, int] | None = None,
    sparse: bool = False,
    float_model: nn.Module | None = None,
    timings: dict[str, float] | None = None,
    runtime: str = DEFAULT_RUNTIME,
    reference: nn.Module | None = None,
    reference_ms: float | None = None,
    trained: bool = True,
) -> Measurement:
    """Measure ``model`` deployed in ``runtime`` on ``device``: every registered figure.

    ``float_model`` is the same network before quantization, for FLOP, parameter and
    activation counts; by default ``model`` itself. ``weight_bits``, ``layer_bits`` (mixed
    precision: bits per conv/linear module of the float model) and ``sparse`` say how the
    weights are stored (see :func:`encoded_size`). ``reference`` is the baseline already
    deployed in ``runtime`` (:func:`deploy`): latency is then timed interleaved with it and
    scaled by ``reference_ms`` (see :mod:`.latency`). ``timings``, when given, receives the
    seconds each step took (``trace_s``, then one ``<figure>_s`` per figure). ``trained=False``
    measures only the figures that do not depend on the trained weights (``needs_training``).
    """
    timings = {} if timings is None else timings
    torch.set_flush_denormal(True)
    if not get_runtime(runtime).runs_on(device):
        raise ValueError(f"the {runtime} runtime does not run on {device!r}.")
    t = time.perf_counter()
    probe = Probe(
        model=model,
        float_model=(float_model if float_model is not None else model).eval(),
        deployed=deploy(model.to(device), runtime, example_input.to(device)),
        runtime=runtime,
        reference=reference,
        reference_ms=reference_ms,
        example_input=example_input,
        val_x=val_x,
        val_y=val_y,
        device=device,
        warmup=warmup,
        repeats=repeats,
        energy_seconds=energy_seconds,
        weight_bits=weight_bits,
        layer_bits=dict(layer_bits) if layer_bits else None,
        sparse=sparse,
    )
    timings["trace_s"] = time.perf_counter() - t
    figures: dict[str, float] = {}
    details: dict[str, Any] = {}
    for figure in FIGURES.values():
        if not trained and figure.needs_training:
            continue
        t = time.perf_counter()
        value, extra = figure.measure(probe)
        figures[figure.name] = int(value) if figure.integer else float(value)
        details.update(extra)
        probe.values[figure.name] = figures[figure.name]
        timings[f"{figure.name}_s"] = time.perf_counter() - t
    details["weight_bits"] = weight_bits
    model.cpu()
    return Measurement(figures=figures, details=details)
