"""Latency at batch 1 on the deployed form: traced and frozen TorchScript, threads recorded."""

from __future__ import annotations

import statistics
import time
import warnings

import torch
from torch import nn

from tradeoff.search.figures import Figure, Tolerance, register_figure
from tradeoff.search.measure.probe import Probe


def cpu_name() -> str:
    """This machine's CPU model, as /proc/cpuinfo names it, for the record of a measurement."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def deployable(model: nn.Module, example_input: torch.Tensor) -> torch.jit.ScriptModule:
    """The model as it ships: traced and frozen TorchScript (batch-norm folded, constants
    inlined). TorchScript is deprecated upstream in favour of torch.export, but it is still the
    form that runs PyTorch's int8 CPU kernels without Python in the loop."""
    model = model.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example_input, check_trace=False)
        return torch.jit.freeze(traced)


def latency(
    fn, example_input: torch.Tensor, *, warmup: int, repeats: int, device: str = "cpu"
) -> tuple[float, float, float]:
    """(median, 10th, 90th percentile) milliseconds of one call, after ``warmup`` calls."""
    times: list[float] = []
    with torch.no_grad():
        x = example_input.to(device)
        for _ in range(warmup):
            fn(x)
        if device.startswith("cuda"):
            for _ in range(repeats):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn(x)
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
        else:
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn(x)
                times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else times * 9
    return statistics.median(times), q[0], q[-1]


def _measure(probe: Probe) -> tuple[float, dict]:
    med, p10, p90 = latency(
        probe.deployed, probe.example_input, warmup=probe.warmup, repeats=probe.repeats, device=probe.device
    )
    threads = torch.get_num_threads()
    cuda = probe.device.startswith("cuda")
    method = (
        f"TorchScript trace+freeze, batch 1, median of {probe.repeats} runs after {probe.warmup} warm-up, "
        f"{'CUDA events' if cuda else f'{threads} CPU threads, denormals flushed'}"
    )
    if probe.weight_bits < 8:
        method += f"; {probe.weight_bits}-bit weights run on the int8 kernels, so this is the 8-bit latency"
    elif probe.weight_bits == 8:
        method += "; int8 kernels (x86/fbgemm)"
    return med, {
        "latency_p10_ms": p10,
        "latency_p90_ms": p90,
        "latency_threads": threads,
        "latency_device": probe.device,
        "latency_method": method,
    }


register_figure(
    Figure(
        name="latency_ms",
        unit="ms",
        direction="minimize",
        label="latency (ms)",
        short="latency",
        measure=_measure,
        method="batch-1 median on traced and frozen TorchScript, threads fixed and recorded",
        weight="latency",
        constraint="max_latency_ms",
        constraint_unit=" ms",
        tolerance=Tolerance(
            "within 35 % or the stored p10-p90 spread, whichever is wider", rel=0.35, spread=True
        ),
        details=("latency_p10_ms", "latency_p90_ms", "latency_threads", "latency_device", "latency_method"),
    )
)
