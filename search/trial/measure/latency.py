"""Latency at batch 1 in the runtime a user deploys, timed against the baseline in the same window."""

from __future__ import annotations

import torch

from tradeoff.search.trial.figures import Figure, Tolerance, register_figure
from tradeoff.search.trial.measure.probe import Probe
from tradeoff.spaces.runtimes import get_runtime
from tradeoff.spaces.timing import BLOCK, paired_latency, spread, time_calls


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


def latency(
    fn, example_input: torch.Tensor, *, warmup: int, repeats: int, device: str = "cpu"
) -> tuple[float, float, float]:
    """(median, 10th, 90th percentile) milliseconds of one call, after ``warmup`` calls."""
    with torch.no_grad():
        x = example_input.to(device)
        for _ in range(warmup):
            fn(x)
        return spread(time_calls(fn, x, repeats, device.startswith("cuda")))


# what a latency timed against the baseline adds (None when there was no baseline to time against)
PAIRED = ("latency_ratio", "latency_ratio_ci", "latency_window_ms", "latency_window_baseline_ms")


def _where(probe: Probe) -> str:
    where = get_runtime(probe.runtime).describe(probe.deployed, probe.device)
    return where if probe.device.startswith("cuda") else f"{where}, denormals flushed"


def _bits_note(probe: Probe) -> str:
    form = getattr(probe.deployed, "form_note", "")
    if form:
        sub8 = f"{probe.weight_bits}-bit weights stored as int8 values; " if probe.weight_bits < 8 else ""
        return f"; {sub8}{form}"
    if probe.weight_bits < 8:
        return f"; {probe.weight_bits}-bit weights run on the int8 kernels, so this is the 8-bit latency"
    if probe.weight_bits == 8:
        return "; int8 kernels" + get_runtime(probe.runtime).int8_note
    return ""


def _measure(probe: Probe) -> tuple[float, dict]:
    threads = torch.get_num_threads()
    common = {"latency_threads": threads, "latency_device": probe.device, "latency_runtime": probe.runtime}
    if probe.reference is None:
        med, p10, p90 = latency(
            probe.deployed,
            probe.example_input,
            warmup=probe.warmup,
            repeats=probe.repeats,
            device=probe.device,
        )
        method = (
            f"{_where(probe)}; batch 1, median of {probe.repeats} runs after {probe.warmup} warm-up"
            + _bits_note(probe)
        )
        unpaired = dict.fromkeys(PAIRED, None)
        return med, {
            "latency_p10_ms": p10,
            "latency_p90_ms": p90,
            **unpaired,
            **common,
            "latency_method": method,
        }
    p = paired_latency(
        probe.deployed,
        probe.reference,
        probe.example_input,
        warmup=probe.warmup,
        repeats=probe.repeats,
        device=probe.device,
    )
    base = probe.reference_ms if probe.reference_ms else p["reference"]
    scale = base / p["reference"]
    method = (
        f"{_where(probe)}; batch 1; timed interleaved with the baseline in the same window "
        f"({p['rounds']} rounds of {BLOCK} calls each, order alternating): the median per-round ratio "
        f"x{p['ratio']:.3f} [{p['ratio_lo']:.3f}, {p['ratio_hi']:.3f}] ({p['coverage']:.0%} interval) "
        f"times the baseline's {base:.4g} ms"
        + (" (its trial's figure)" if probe.reference_ms else " (measured in this window)")
        + f"; this window: {p['median']:.4g} ms against the baseline's {p['reference']:.4g} ms"
        + _bits_note(probe)
    )
    return p["ratio"] * base, {
        "latency_p10_ms": min(p["p10"] * scale, p["ratio_lo"] * base),
        "latency_p90_ms": max(p["p90"] * scale, p["ratio_hi"] * base),
        "latency_ratio": p["ratio"],
        "latency_ratio_ci": [p["ratio_lo"], p["ratio_hi"]],
        "latency_window_ms": p["median"],
        "latency_window_baseline_ms": p["reference"],
        **common,
        "latency_method": method,
    }


register_figure(
    Figure(
        needs_training=False,
        name="latency_ms",
        unit="ms",
        direction="minimize",
        label="latency (ms)",
        short="latency",
        measure=_measure,
        method=(
            "batch-1 median in the study's runtime (ONNX Runtime by default), timed interleaved with "
            "the baseline and scaled by the baseline's latency; threads fixed and recorded"
        ),
        weight="latency",
        constraint="max_latency_ms",
        constraint_unit=" ms",
        tolerance=Tolerance(
            "within 35 % or the stored p10-p90 spread, whichever is wider", rel=0.35, spread=True
        ),
        details=(
            "latency_p10_ms",
            "latency_p90_ms",
            *PAIRED,
            "latency_threads",
            "latency_device",
            "latency_runtime",
            "latency_method",
        ),
    )
)
