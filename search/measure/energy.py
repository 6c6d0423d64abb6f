"""Energy per inference: a hardware counter where the machine has one (RAPL, NVML), else an
estimate from Horowitz's ISSCC 2014 operation and memory energies; the method says which."""

from __future__ import annotations

import glob
import os
import time

import torch
from torch import nn

from tradeoff.search.figures import Figure, Tolerance, register_figure
from tradeoff.search.measure.probe import Probe

# Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm at 0.9 V, in picojoules.
PJ_MAC = {32: 3.7 + 0.9, 16: 1.1 + 0.4, 8: 0.2 + 0.1}  # multiply + add (int8: int32 accumulate)
PJ_ADD_FP32 = 0.9
PJ_PER_BYTE_DRAM = 1950.0 / 8  # 1.3-2.6 nJ per 64-bit DRAM access, midpoint
PJ_PER_BYTE_SRAM = 20.0 / 8  # 20 pJ per 64-bit read from a 32 KB cache


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


def _measure(probe: Probe) -> tuple[float, dict]:
    energy = measured_energy_mj(
        probe.deployed, probe.example_input, device=probe.device, seconds=probe.energy_seconds
    )
    if energy is None:
        total, macs = probe.flop_counts
        act_bytes = (
            activation_elements(probe.float_model, probe.cpu_example) * probe.activation_bytes_per_element * 2
        )
        energy = estimated_energy_mj(
            macs=macs,
            other_flops=total - macs,
            weight_bytes=int(probe.values["size_bytes"]),
            activation_bytes=act_bytes,
            bits=probe.weight_bits,
        )
    return energy[0], {"energy_method": energy[1]}


register_figure(
    Figure(
        name="energy_mj",
        unit="mJ",
        direction="minimize",
        label="energy per inference (mJ)",
        short="energy",
        measure=_measure,
        method="RAPL (CPU) or NVML (GPU) counter where readable, else estimated (Horowitz, ISSCC 2014)",
        weight="energy",
        constraint="max_energy_mj",
        constraint_unit=" mJ",
        tolerance=Tolerance("within 35 % when measured; 1 % when estimated", rel=0.35, rel_estimated=0.01),
        details=("energy_method",),
        needs=("flops", "size_bytes"),
    )
)
