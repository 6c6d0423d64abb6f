"""Energy per inference: a hardware counter where the machine has one (RAPL, NVML), else an
estimate per layer from Horowitz's ISSCC 2014 operation and memory energies, with an on-chip
cache that holds what fits; the method says which.

The estimate, per conv/linear layer of the deployed graph (batch-norm folded): its MACs at the
deployed precision (int8 kernels for int8 and sub-8-bit plans, fp32 otherwise), plus its
weights and its input and output activations moved at the cache's energy when they fit in the
last-level cache (the target device's where ``$TRADEOFF_LLC`` gives it, e.g. ``4M`` for a phone
SoC's, else this machine's, read from sysfs; recorded either way), at DRAM's otherwise; weights
fit when all the weights and the largest layer's activations do (a batch-1 loop reads every
weight each inference: an LRU cache smaller than that working set keeps none of it). Other
operations (ReLU, add, pooling) at one fp32 add each. This follows the accounting of Yang et
al., "Designing energy-efficient convolutional neural networks using energy-aware pruning"
(CVPR 2017: computation plus data movement per level of the memory hierarchy), with
Horowitz's 45-nm energies in place of their measured Eyeriss ones.
"""

from __future__ import annotations

import glob
import os
import time

import torch
from torch import nn

from tradeoff.search.trial.figures import Figure, Tolerance, register_figure
from tradeoff.search.trial.measure.probe import Probe
from tradeoff.spaces._base import each_layer_call, macs_per_output

# Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm at 0.9 V, in picojoules.
PJ_MAC = {32: 3.7 + 0.9, 16: 1.1 + 0.4, 8: 0.2 + 0.1}  # multiply + add (int8: int32 accumulate)
PJ_ADD_FP32 = 0.9
PJ_PER_BYTE_DRAM = 1950.0 / 8  # 1.3-2.6 nJ per 64-bit DRAM access, midpoint
PJ_PER_BYTE_SRAM = 20.0 / 8  # 20 pJ per 64-bit read from a 32 KB cache
PJ_PER_BYTE_CACHE = 100.0 / 8  # 100 pJ per 64-bit read from a 1 MB SRAM: the large on-chip cache
DEFAULT_CACHE_BYTES = 32 << 20


ENV_LLC = "TRADEOFF_LLC"


def _size(text: str) -> int:
    """Bytes of a cache size as sysfs and users write it: ``49152K``, ``32M``, ``1G``, ``33554432``."""
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(float(text.rstrip("KMG")) * unit)


def target_cache_bytes() -> int | None:
    """The last-level cache of the device the user deploys to, from ``$TRADEOFF_LLC`` (``4M``,
    ``512K``), or None where it is unset; a value that is not a size is a usage error."""
    text = os.environ.get(ENV_LLC, "").strip()
    if not text:
        return None
    try:
        size = _size(text)
    except (ValueError, OverflowError):
        size = 0
    if size <= 0:
        from tradeoff.search.errors import UsageError

        raise UsageError(
            f"{ENV_LLC}={text!r} is not a cache size: give the target's last-level cache as 32M, 512K "
            f"or a byte count, or unset it to use this machine's"
        )
    return size


def cache_bytes() -> tuple[int, str]:
    """(bytes, where from): the target's last-level cache where ``$TRADEOFF_LLC`` names one (an
    energy estimate for the device the model is deployed to, not the one measuring it), else the
    largest CPU cache sysfs lists for cpu0 (the last level)."""
    target = target_cache_bytes()
    here = _sysfs_cache_bytes()
    if target is not None:
        mib = f"{target / (1 << 20):g} MiB"
        seen = f"this machine's {here >> 20} MiB" if here else "this machine's unlisted"
        return target, f"last-level cache {mib} (${ENV_LLC}, the target's; {seen} not used)"
    if here:
        return here, f"last-level cache {here >> 20} MiB (sysfs)"
    return DEFAULT_CACHE_BYTES, f"cache {DEFAULT_CACHE_BYTES >> 20} MiB (assumed: sysfs lists none)"


def _sysfs_cache_bytes() -> int:
    """The largest CPU cache sysfs lists for cpu0 (the last level), 0 where it lists none."""
    best = 0
    for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            with open(path) as f:
                text = f.read().strip().upper()
        except OSError:
            continue
        try:
            best = max(best, _size(text))
        except (ValueError, OverflowError):
            continue
    return best


@torch.no_grad()
def layer_traffic(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    weight_bits: int,
    activation_bytes: int,
    sparse: bool = False,
    layer_bits: dict[str, int] | None = None,
) -> list[tuple[str, int, float, int]]:
    """(layer, MACs, weight bytes, input + output activation bytes) of every conv and linear
    layer of ``model`` in one forward pass, at the deployed precision: weights at
    ``weight_bits`` bits (the non-zero ones and a 1-bit position map when ``sparse``),
    activations at ``activation_bytes`` a value."""
    rows: list[tuple[str, int, float, int]] = []

    def record(name, m, inputs, out):
        w = m.weight
        stored = int(torch.count_nonzero(w)) if sparse else w.numel()
        bits = (layer_bits or {}).get(name, weight_bits)
        wbytes = stored * bits / 8 + (w.numel() / 8 if sparse else 0)
        acts = (inputs.numel() + out.numel()) * activation_bytes
        rows.append((name, out.numel() * macs_per_output(m), wbytes, acts))

    each_layer_call(model, example_input, record)
    return rows


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


def has_energy_counter(device: str) -> bool:
    """Whether energy on ``device`` is read from a hardware counter (RAPL, NVML) here."""
    if device.startswith("cuda"):
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(torch.device(device).index or 0)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            return True
        except Exception:  # noqa: BLE001 - no library, no GPU, or no counter on it
            return False
    return bool(_rapl_counters())


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
    layers: list[tuple[str, int, float, int]],
    *,
    other_flops: int,
    bits: int,
    cache: tuple[int, str] = (DEFAULT_CACHE_BYTES, "assumed"),
    layer_bits: dict[str, int] | None = None,
) -> tuple[float, str]:
    """The per-layer estimate of the module docstring for ``layers`` (:func:`layer_traffic`);
    with ``layer_bits`` (mixed precision) each layer's MACs at its own precision."""
    mac_bits = 8 if bits <= 8 else 32
    size, where = cache
    weights = sum(w for _, _, w, _ in layers)
    peak_acts = max((a for *_, a in layers), default=0)
    weights_cached = weights + peak_acts <= size
    pj_weight = PJ_PER_BYTE_CACHE if weights_cached else PJ_PER_BYTE_DRAM
    macs = sum(m for _, m, _, _ in layers)
    compute = other_flops * PJ_ADD_FP32
    for name, m, _, _ in layers:
        compute += m * PJ_MAC[8 if (layer_bits or {}).get(name, bits) <= 8 else 32]
    float_macs = sum(m for name, m, _, _ in layers if (layer_bits or {}).get(name, bits) > 8)
    mac_text = f"{macs} MACs x {PJ_MAC[mac_bits]:g} pJ ({mac_bits}-bit)"
    if layer_bits:
        mac_text = (
            f"{macs - float_macs} MACs x {PJ_MAC[8]:g} pJ (8-bit) + {float_macs} MACs x {PJ_MAC[32]:g} pJ "
            "(32-bit, the float layers)"
        )
    weight_pj = weights * pj_weight
    act_pj = sum(a * (PJ_PER_BYTE_CACHE if a <= size else PJ_PER_BYTE_DRAM) for *_, a in layers)
    total = compute + weight_pj + act_pj
    method = (
        f"estimated: per layer (Horowitz ISSCC 2014, 45 nm; {where}): {len(layers)} conv/linear layers, "
        f"{mac_text} + {other_flops} other ops x "
        f"{PJ_ADD_FP32} pJ = {compute * 1e-9:.4g} mJ; {weights:.0f} weight bytes from "
        f"{'the cache' if weights_cached else 'DRAM'} = {weight_pj * 1e-9:.4g} mJ; activations "
        f"{act_pj * 1e-9:.4g} mJ"
    )
    return total * 1e-9, method


def _measure(probe: Probe) -> tuple[float, dict]:
    energy = measured_energy_mj(
        probe.deployed, probe.example_input, device=probe.device, seconds=probe.energy_seconds
    )
    if energy is None:
        total, macs = probe.flop_counts
        layers = layer_traffic(
            probe.folded_model or probe.float_model,
            probe.cpu_example,
            weight_bits=probe.weight_bits,
            activation_bytes=probe.activation_bytes_per_element,
            sparse=probe.sparse,
            layer_bits=probe.layer_bits,
        )
        energy = estimated_energy_mj(
            layers,
            other_flops=total - macs,
            bits=probe.weight_bits,
            cache=cache_bytes(),
            layer_bits=probe.layer_bits,
        )
    return energy[0], {"energy_method": energy[1]}


register_figure(
    Figure(
        needs_training=False,
        name="energy_mj",
        unit="mJ",
        direction="minimize",
        label="energy per inference (mJ)",
        short="energy",
        measure=_measure,
        method=(
            "RAPL (CPU) or NVML (GPU) counter where readable, else estimated per layer (Horowitz, ISSCC "
            "2014, with the last-level cache)"
        ),
        weight="energy",
        constraint="max_energy_mj",
        constraint_unit=" mJ",
        tolerance=Tolerance("within 35 % when measured; 1 % when estimated", rel=0.35, rel_estimated=0.01),
        details=("energy_method",),
        needs=("flops",),
    )
)
