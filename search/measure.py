"""Measurements of one model: accuracy, params, FLOPs, size, latency and energy.

Every figure is measured on the model in the form a user deploys it: traced and frozen
TorchScript (:func:`deployable`), which is also what ``tradeoff export`` writes. How each figure
was obtained is recorded beside it (``*_method``); an energy figure that is not read from a
hardware counter says ``estimated: ...``.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import os
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# name -> direction, for every figure that can be an objective
OBJECTIVES: dict[str, str] = {
    "accuracy": "maximize",
    "params": "minimize",
    "flops": "minimize",
    "size_bytes": "minimize",
    "latency_ms": "minimize",
    "energy_mj": "minimize",
}

FLOPS_METHOD = "fvcore FlopCountAnalysis, batch 1; one fused multiply-add counts as one flop"
SIZE_METHOD = "bytes of torch.save(state_dict)"

# Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm at 0.9 V, in picojoules.
PJ_MAC = {32: 3.7 + 0.9, 16: 1.1 + 0.4, 8: 0.2 + 0.1}  # multiply + add (int8: int32 accumulate)
PJ_ADD_FP32 = 0.9
PJ_PER_BYTE_DRAM = 1950.0 / 8  # 1.3-2.6 nJ per 64-bit DRAM access, midpoint
PJ_PER_BYTE_SRAM = 20.0 / 8  # 20 pJ per 64-bit read from a 32 KB cache
_MAC_OPS = ("conv", "linear", "addmm", "matmul", "bmm", "baddbmm", "einsum", "mm")


@dataclass(frozen=True)
class Measurement:
    """Figures of one model. Units are in the names; counts have none."""

    accuracy: float
    params: int
    flops: int
    size_bytes: int
    latency_ms: float
    latency_p10_ms: float
    latency_p90_ms: float
    latency_threads: int
    latency_device: str
    latency_method: str
    energy_mj: float
    energy_method: str
    flops_method: str = FLOPS_METHOD
    size_method: str = SIZE_METHOD
    weight_bits: int = 32

    def values(self, objectives: Sequence[str]) -> list[float]:
        return [float(getattr(self, name)) for name in objectives]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


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


@torch.no_grad()
def accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256, device: str = "cpu"
) -> float:
    correct = 0
    for i in range(0, len(x), batch_size):
        pred = model(x[i : i + batch_size].to(device)).argmax(1).cpu()
        correct += int((pred == y[i : i + batch_size]).sum())
    return correct / max(1, len(y))


def count_params(model: nn.Module, *, sparse: bool = False) -> int:
    """Parameters stored by the model; with ``sparse``, only the non-zero ones."""
    if sparse:
        return int(sum(int(torch.count_nonzero(p)) for p in model.parameters()))
    return int(sum(p.numel() for p in model.parameters()))


def serialized_size(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def weight_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The weight tensor of every conv and linear layer, float or quantized."""
    out = []
    for m in model.modules():
        w = getattr(m, "weight", None)
        if callable(w) and not isinstance(w, torch.Tensor):  # quantized modules: weight()
            try:
                w = w()
            except Exception:  # noqa: BLE001
                continue
        if isinstance(w, torch.Tensor) and w.dim() >= 2:
            out.append(w)
    return out


def _values(w: torch.Tensor) -> torch.Tensor:
    return w.int_repr() if w.is_quantized else w.detach()


def encoded_size(model: nn.Module, *, weight_bits: int = 32, sparse: bool = False) -> tuple[int, str]:
    """(bytes, method): the serialized state dict, with every conv/linear weight re-counted at
    ``weight_bits`` bits packed and, for sparse weights, as a bitmap of positions plus the
    non-zero values. Without either, the serialized size as it is."""
    size = serialized_size(model)
    if weight_bits >= 8 and not sparse:
        return size, SIZE_METHOD
    for w in weight_tensors(model):
        values = _values(w)
        stored = values.numel() * values.element_size()
        bits = min(weight_bits, values.element_size() * 8)
        if sparse:
            encoded = (int(torch.count_nonzero(values)) * bits + values.numel() + 7) // 8
        else:
            encoded = (values.numel() * bits + 7) // 8
        size += encoded - stored
    parts = [SIZE_METHOD]
    if weight_bits < 8:
        parts.append(f"conv/linear weights counted at {weight_bits} bits packed (scales as stored)")
    if sparse:
        parts.append("sparse weights as a 1-bit position bitmap plus the non-zero values")
    return size, "; ".join(parts)


def count_flops(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    """(total flops, of which multiply-accumulates in conv/linear/matmul), fvcore's convention."""
    from fvcore.nn import FlopCountAnalysis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fa = FlopCountAnalysis(model.eval(), example_input)
        fa.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = int(fa.total())
        by_op = fa.by_operator()
    macs = int(sum(v for op, v in by_op.items() if any(k in op for k in _MAC_OPS)))
    return total, macs


@torch.no_grad()
def activation_elements(model: nn.Module, example_input: torch.Tensor) -> int:
    """Elements written by every leaf module in one forward pass."""
    total = 0

    def hook(_m, _i, out):
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        model.eval()(example_input)
    finally:
        for h in handles:
            h.remove()
    return total


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


# -- energy ---------------------------------------------------------------------------------


def _rapl_counters() -> list[tuple[str, int]]:
    """Readable package-level RAPL counters: (energy_uj path, max_energy_range_uj)."""
    out = []
    for zone in sorted(glob.glob("/sys/class/powercap/*rapl*:[0-9]")):
        path = os.path.join(zone, "energy_uj")
        try:
            with open(path) as f:
                int(f.read())
            with open(os.path.join(zone, "max_energy_range_uj")) as f:
                rng = int(f.read())
        except (OSError, ValueError):
            continue
        out.append((path, rng))
    return out


def _read_uj(counters) -> list[int]:
    vals = []
    for path, _ in counters:
        with open(path) as f:
            vals.append(int(f.read()))
    return vals


def _run_for(fn, x: torch.Tensor, seconds: float) -> int:
    n, t_end = 0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        fn(x)
        n += 1
    return n


@torch.no_grad()
def measured_energy_mj(
    fn, example_input: torch.Tensor, *, device: str, seconds: float = 1.0
) -> tuple[float, str] | None:
    """Energy per inference from a hardware counter, or None where the machine has none."""
    if device.startswith("cuda"):
        try:
            import pynvml  # nvidia-ml-py
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
            index = torch.device(device).index or 0
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            x = example_input.to(device)
            torch.cuda.synchronize()
            e0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # millijoules
            n = _run_for(fn, x, seconds)
            torch.cuda.synchronize()
            e1 = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except Exception:  # noqa: BLE001 - counter not supported on this GPU
            return None
        return (e1 - e0) / n, f"measured: NVML total energy counter, GPU {index}, over {n} runs"
    counters = _rapl_counters()
    if not counters:
        return None
    x = example_input.to(device)
    e0 = _read_uj(counters)
    n = _run_for(fn, x, seconds)
    e1 = _read_uj(counters)
    uj = sum((b - a) % rng for a, b, (_, rng) in zip(e0, e1, counters))
    return uj / 1000.0 / n, (
        f"measured: RAPL package counters over {n} runs (whole package: includes idle power and "
        "other processes)"
    )


def estimated_energy_mj(
    *, macs: int, other_flops: int, weight_bytes: int, activation_bytes: int, bits: int
) -> tuple[float, str]:
    """Horowitz (ISSCC 2014, 45 nm) operation and memory energies applied to this model."""
    mac_bits = 8 if bits <= 8 else (16 if bits <= 16 else 32)
    pj = (
        macs * PJ_MAC[mac_bits]
        + other_flops * PJ_ADD_FP32
        + weight_bytes * PJ_PER_BYTE_DRAM
        + activation_bytes * PJ_PER_BYTE_SRAM
    )
    method = (
        f"estimated: Horowitz ISSCC 2014 (45 nm): {macs} MACs x {PJ_MAC[mac_bits]:g} pJ ({mac_bits}-bit) "
        f"+ {other_flops} other ops x {PJ_ADD_FP32} pJ + {weight_bytes} weight bytes from DRAM x "
        f"{PJ_PER_BYTE_DRAM:.0f} pJ + {activation_bytes} activation bytes via SRAM x {PJ_PER_BYTE_SRAM} pJ"
    )
    return pj * 1e-9, method


# -- everything -----------------------------------------------------------------------------


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
    sparse: bool = False,
    float_model: nn.Module | None = None,
    timings: dict[str, float] | None = None,
) -> Measurement:
    """Measure ``model`` for deployment on ``device``.

    ``float_model`` is the same network before quantization, for FLOP, parameter and
    activation counts (fvcore does not trace quantized kernels); by default ``model`` itself.
    ``weight_bits`` and ``sparse`` say how the weights are stored (see :func:`encoded_size`).
    ``timings``, when given, receives the seconds each measurement took.
    """
    timings = {} if timings is None else timings
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[f"{name}_s"] = now - clock
        clock = now

    torch.set_flush_denormal(True)
    reference = (float_model if float_model is not None else model).eval()
    cpu_example = example_input.cpu()
    total_flops, macs = count_flops(reference, cpu_example)
    lap("flops")
    act_bytes = activation_elements(reference, cpu_example) * (1 if weight_bits <= 8 else 4) * 2
    params = count_params(reference, sparse=sparse)
    size, size_method = encoded_size(model, weight_bits=weight_bits, sparse=sparse)
    lap("size")
    deployed = deployable(model.to(device), example_input.to(device))
    lap("trace")
    acc = accuracy(deployed, val_x, val_y, device=device)
    lap("accuracy")
    med, p10, p90 = latency(deployed, example_input, warmup=warmup, repeats=repeats, device=device)
    lap("latency")
    threads = torch.get_num_threads()
    method = (
        f"TorchScript trace+freeze, batch 1, median of {repeats} runs after {warmup} warm-up, "
        f"{'CUDA events' if device.startswith('cuda') else f'{threads} CPU threads, denormals flushed'}"
    )
    if weight_bits < 8:
        method += f"; {weight_bits}-bit weights run on the int8 kernels, so this is the 8-bit latency"
    elif weight_bits == 8:
        method += "; int8 kernels (x86/fbgemm)"
    energy = measured_energy_mj(deployed, example_input, device=device, seconds=energy_seconds)
    if energy is None:
        energy = estimated_energy_mj(
            macs=macs,
            other_flops=total_flops - macs,
            weight_bytes=size,
            activation_bytes=act_bytes,
            bits=weight_bits,
        )
    lap("energy")
    model.cpu()
    return Measurement(
        accuracy=acc,
        params=params,
        flops=total_flops,
        size_bytes=size,
        latency_ms=med,
        latency_p10_ms=p10,
        latency_p90_ms=p90,
        latency_threads=threads,
        latency_device=device,
        latency_method=method,
        energy_mj=energy[0],
        energy_method=energy[1],
        size_method=size_method,
        weight_bits=weight_bits,
    )
